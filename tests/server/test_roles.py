"""Every route of the OpenAPI document, for every role and for no role.

The table below says which role each operation needs; the test fails when the document
has an operation the table lacks (a new route must say who may use it) or when the
server lets a lower role through or turns a sufficient one away.
"""

from __future__ import annotations

import re

import pytest_asyncio

from ilastik_web.accounts import Accounts, role_rank
from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.layers import StaticLayer

EXPECTED = {
    "favicon": "public", "health": "public", "login": "public", "login_callback": "public",
    "root": "user", "openapi": "user", "me": "user", "logout": "user", "start_page": "user",
    "create_project": "account",
    "list_sources": "viewer", "get_source": "viewer", "list_layers": "viewer",
    "notices": "viewer", "metrics": "admin",
    "list_engines": "viewer", "export_ilp": "viewer", "export_labels": "owner",
    "precomputed_info": "viewer", "precomputed_chunk": "viewer",
    "viewer_redirect": "viewer", "viewer_index": "viewer", "viewer_file": "viewer",
    "viewer_events": "viewer", "viewer_state": "viewer", "viewer_credentials": "viewer",
    "viewer_action": "annotator",
    "list_projects": "user", "get_project": "viewer", "get_features": "viewer",
    "importance": "viewer", "probabilities_at": "viewer", "project_events": "viewer",
    "paint": "annotator", "undo": "annotator", "redo": "annotator", "train": "annotator",
    "add_class": "owner", "update_class": "owner", "delete_class": "owner",
    "set_features": "owner", "set_feature_channels": "owner", "set_live": "owner",
    "list_jobs": "owner", "submit_job": "owner", "get_job": "owner", "job_logs": "owner",
    "cancel_job": "owner", "resume_job": "owner", "open_job_layer": "owner",
    "list_links": "owner", "create_link": "owner", "revoke_link": "owner",
    "list_members": "owner", "set_member": "owner",
    "sam_models": "viewer", "sam_status": "viewer", "sam_mask": "viewer", "sam_task": "viewer",
    "sam_prompt": "annotator", "sam_reject": "annotator", "sam_accept": "annotator",
    "sam_propagate": "annotator", "sam_precompute": "annotator",
    "sam_cancel_task": "annotator", "sam_delete_object": "annotator",
    "sam_automatic": "annotator", "sam_finetune": "admin",
    "collection_info": "viewer", "collection_item": "viewer", "collection_task": "viewer",
    "collection_navigate": "annotator", "collection_add_object": "annotator",
    "collection_delete_object": "annotator", "collection_train": "annotator",
    "collection_cancel_task": "annotator", "collection_export": "owner",
    "collection_jobs": "owner", "collection_sam_finetune": "owner",
    "collection_sam_embeddings": "owner", "collection_job": "owner",
    "collection_job_logs": "owner", "collection_cancel_job": "owner",
    "collection_resume_job": "owner", "collection_job_sam_model": "owner",
    "instances_layer": "annotator", "instances_get": "viewer", "instances_at": "viewer",
    "instances_outline": "viewer", "instances_polygon": "annotator",
    "instances_clear": "annotator", "instances_cut": "annotator",
    "instances_brush": "annotator", "instances_merge": "annotator",
    "instances_delete": "annotator", "instances_undo": "annotator",
    "instances_redo": "annotator",
    "submit_sam_finetune": "owner", "submit_sam_embeddings": "owner", "job_sam_model": "owner",
}
WHO = ("nobody", "viewer", "annotator", "owner")


@pytest_asyncio.fixture
async def world(aiohttp_client, tmp_path, blob_source):
    resources = Resources(64 * 2**20, threads=2)
    raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
    p = Project.create(tmp_path / "p", raw.volume("v0"), classes=["a", "b", "c"])
    q = Project.create(tmp_path / "q", raw.volume("v0"), classes=["a", "b"])
    app = create_app(ServerConfig(token="operator"), layers=[raw],
                     projects=[("p", p, "raw"), ("q", q, "raw")], resources=resources)
    client = await aiohttp_client(app)
    accounts: Accounts = app[CONTEXT_KEY].access.accounts
    tokens = {role: accounts.create_link("p", role)[1] for role in WHO[1:]}
    layers = (await (await client.get(
        "/api/layers", headers={"Authorization": "Bearer operator"})).json())["layers"]
    versions = {layer["id"]: layer["version"] for layer in layers}
    return client, tokens, versions


def _path(template: str, versions: dict, project: str) -> str:
    values = {
        "project_id": project, "layer_id": f"{project}-labels", "source_id": "raw",
        "version": versions[f"{project}-labels"], "scale_key": "s0",
        "chunk": "0-64_0-64_0-24", "value": "3", "link_id": "nolink", "job_id": "nojob",
        "mask_id": "nomask", "task_id": "notask", "viewer_token": "main",
        "name": "index.html", "object_id": "1", "user_id": "nouser",
        "item_id": "noitem",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


async def _call(client, method: str, path: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs = {"json": {}} if method in ("post", "put", "patch") else {}
    response = await client.request(method, path, headers=headers, allow_redirects=False,
                                    **kwargs)
    status = response.status
    text = "" if path.startswith("/events/") else await response.text()
    response.close()
    return status, text


async def test_every_route_for_every_role(world):
    client, tokens, versions = world
    document = await (await client.get(
        "/api/openapi.json", headers={"Authorization": "Bearer operator"})).json()
    operations = {op["operationId"]: (method, path, op)
                  for path, ops in document["paths"].items() for method, op in ops.items()}
    assert set(operations) == set(EXPECTED), "every route needs a row in EXPECTED"
    checked = 0
    for name, (method, template, op) in sorted(operations.items()):
        needed = EXPECTED[name]
        assert op["x-required-role"] == needed, name
        path = _path(template, versions, "p")
        for who in WHO:
            status, text = await _call(client, method, path, tokens.get(who))
            where = f"{method.upper()} {path} as {who}"
            if needed == "public":
                assert status not in (401, 403), where
            elif who == "nobody":
                assert status == 401, where
            elif needed in ("account", "admin") or (needed != "user"
                                                    and role_rank(who) < role_rank(needed)):
                # (share-link holders have no account)
                assert status == 403, where
                expected = ("server's operator" if needed == "admin"
                            else f"needs the {needed} role")
                assert expected in text, where
            else:
                assert status != 401 and "needs the" not in text, (where, status, text)
            checked += 1
    assert checked == len(EXPECTED) * len(WHO)


async def test_a_link_grants_nothing_on_another_project(world):
    client, tokens, versions = world
    document = await (await client.get(
        "/api/openapi.json", headers={"Authorization": "Bearer operator"})).json()
    for template, ops in document["paths"].items():
        if "{project_id}" not in template and "{layer_id}" not in template:
            continue
        for method, op in ops.items():
            if op["x-required-role"] in ("public", "user"):
                continue
            path = _path(template, versions, "q")
            if "{layer_id}" in template and "/sam/" in template:
                continue  # SAM instance layers belong to no project
            for who in WHO[1:]:
                status, text = await _call(client, method, path, tokens[who])
                assert status == 403, (method, path, who, status, text)


async def test_listing_shows_only_the_projects_one_may_see(world):
    client, tokens, _ = world
    me = await (await client.get("/api/me", headers={
        "Authorization": f"Bearer {tokens['annotator']}"})).json()
    assert me["projects"] == {"p": "annotator"}
    resp = await client.get("/api/projects", headers={
        "Authorization": f"Bearer {tokens['viewer']}"})
    assert [p["id"] for p in (await resp.json())["projects"]] == ["p"]
    resp = await client.get("/api/projects", headers={"Authorization": "Bearer operator"})
    assert [p["id"] for p in (await resp.json())["projects"]] == ["p", "q"]
