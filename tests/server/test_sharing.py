"""Share links end to end: create, open (token -> cookie), use, revoke, expire; accounts."""

from __future__ import annotations

import json

import aiohttp
import pytest
import pytest_asyncio

from ilastik_web.accounts import Accounts
from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.auth import SESSION_COOKIE
from ilastik_web.server.layers import StaticLayer

OPERATOR = {"Authorization": "Bearer operator"}
STROKE = {"points_xyz": [[20.5, 20.5, 5.5]], "radius": 2.0, "label": 1}


@pytest_asyncio.fixture
async def make_client(aiohttp_client, tmp_path, blob_source):
    async def factory():
        resources = Resources(64 * 2**20, threads=2)
        raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
        project = Project.create(tmp_path / "p", raw.volume("v0"), classes=["a", "b"])
        app = create_app(ServerConfig(token="operator", accounts_path=tmp_path / "acc.json"),
                         layers=[raw], projects=[("p", project, "raw")], resources=resources)
        return await aiohttp_client(app)
    return factory


async def _link(client, role, **extra):
    resp = await client.post("/api/projects/p/links", json={"role": role, **extra},
                             headers=OPERATOR)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_annotator_link_opens_paints_and_stops_when_revoked(make_client):
    client = await make_client()
    link = await _link(client, "annotator")
    assert link["url"].endswith(f"/v/main/?project=p&token={link['token']}")
    path = link["url"].split(str(client.port), 1)[1]
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 303
    assert link["token"] not in resp.headers["Location"]
    assert resp.headers["Location"].endswith("/v/main/?project=p")
    assert resp.cookies[SESSION_COOKIE]["httponly"]
    # from now on the cookie alone (the client's jar keeps it)
    assert (await client.get("/v/main/?project=p")).status == 200
    me = await (await client.get("/api/me")).json()
    assert me["projects"] == {"p": "annotator"} and me["id"].startswith("guest:")
    assert (await client.post("/api/projects/p/strokes", json=STROKE)).status == 200
    resp = await client.post("/api/projects/p/classes", json={"name": "x"})
    assert resp.status == 403
    assert "needs the owner role" in (await resp.json())["error"]
    # the listing never shows tokens
    listing = await (await client.get("/api/projects/p/links", headers=OPERATOR)).text()
    assert link["token"] not in listing and link["token"].split("_", 2)[2] not in listing
    ws = await client.ws_connect("/api/projects/p/events")
    assert (await ws.receive_json())["kind"] == "hello"
    resp = await client.delete(f"/api/projects/p/links/{link['id']}", headers=OPERATOR)
    assert (await resp.json())["revoked"] is True
    # an open event stream ends too
    while True:
        message = await ws.receive(timeout=60)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert ws.close_code == 4403
    # revoked: the very next request is refused
    assert (await client.post("/api/projects/p/strokes", json=STROKE)).status == 403
    assert (await client.get("/v/main/")).status == 403
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 401


async def test_a_browser_collects_links_and_keeps_the_best_role(make_client):
    client = await make_client()
    viewer, annotator = await _link(client, "viewer"), await _link(client, "annotator")
    for link in (viewer, annotator):
        await client.get(link["url"].split(str(client.port), 1)[1])
    me = await (await client.get("/api/me")).json()
    assert me["projects"] == {"p": "annotator"}


async def test_tokens_are_stored_only_as_hashes(make_client, tmp_path):
    client = await make_client()
    link = await _link(client, "viewer", expires_in_s=3600)
    stored = (tmp_path / "acc.json").read_text()
    secret = link["token"].split("_", 2)[2]
    assert secret not in stored
    assert json.loads(stored)["links"][0]["secret_sha256"]
    assert link["expires_s"] == pytest.approx(link["created_s"] + 3600)


async def test_bad_link_requests_are_400(make_client):
    client = await make_client()
    for body in ({"role": "god"}, {}, {"role": "viewer", "expires_in_s": -1},
                 {"role": "viewer", "expires_in_s": "soon"}, []):
        resp = await client.post("/api/projects/p/links", json=body, headers=OPERATOR)
        assert resp.status == 400, body
    resp = await client.delete("/api/projects/p/links/nope", headers=OPERATOR)
    assert resp.status == 404


def test_links_expire_and_survive_a_restart(tmp_path):
    now = [1000.0]
    accounts = Accounts(tmp_path / "a.json", clock=lambda: now[0])
    link, token = accounts.create_link("p", "annotator", expires_in_s=10)
    assert accounts.resolve_token(token) == link
    assert accounts.resolve_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert accounts.resolve_token("iwl_nolink_x") is None
    assert accounts.resolve_token("plain") is None
    reopened = Accounts(tmp_path / "a.json", clock=lambda: now[0])
    assert reopened.resolve_token(token) == link
    now[0] += 10
    assert reopened.resolve_token(token) is None
    assert reopened.link_role(link.id, "p") is None


def test_users_and_roles(tmp_path):
    accounts = Accounts(tmp_path / "a.json")
    alice = accounts.user_for_subject("https://idp|alice", "Alice")
    assert accounts.user_for_subject("https://idp|alice", "Alice") == alice
    accounts.set_role("p", alice.id, "owner")
    assert Accounts(tmp_path / "a.json").role_of(alice.id, "p") == "owner"
    assert accounts.projects_of(alice.id) == {"p": "owner"}
    accounts.set_role("p", alice.id, None)
    assert accounts.role_of(alice.id, "p") is None


async def _open_as(aiohttp_client_factory, app, link):
    other = await aiohttp_client_factory(app)
    await other.get(link["url"].split(str(other.port), 1)[1])
    return other


async def test_two_people_own_undo_presence_and_cameras(make_client, aiohttp_client):
    from aiohttp.test_utils import TestClient

    alice = await make_client()
    link = await _link(alice, "annotator")
    viewer_link = await _link(alice, "viewer")
    # two browsers = two cookie jars on the same server
    bob = TestClient(alice.server)
    await bob.start_server()
    for client, chosen in ((alice, link), (bob, viewer_link)):
        await client.get(chosen["url"].split(str(client.port), 1)[1])
    base = f"http://{alice.host}:{alice.port}"
    ws_a = await alice.ws_connect("/api/projects/p/events", headers={"Origin": base})
    hello = await ws_a.receive_json()
    assert hello["kind"] == "hello" and hello["payload"]["role"] == "annotator"
    ws_b = await bob.ws_connect("/api/projects/p/events", headers={"Origin": base})
    assert (await ws_b.receive_json())["payload"]["role"] == "viewer"

    async def people_seen(ws, count):
        while True:
            event = await ws.receive_json(timeout=60)
            if event["kind"] == "presence" and len(event["payload"]["people"]) == count:
                return event["payload"]["people"]

    people = await people_seen(ws_a, 2)
    assert sorted(p["role"] for p in people) == ["annotator", "viewer"]
    # the viewer is refused with a message that says why
    resp = await bob.post("/api/projects/p/strokes", json=STROKE)
    assert resp.status == 403
    assert "viewer role" in (await resp.json())["error"]
    assert (await alice.post("/api/projects/p/strokes", json=STROKE)).status == 200
    event = await ws_b.receive_json(timeout=60)
    while event["kind"] != "labels":
        event = await ws_b.receive_json(timeout=60)
    # the operator paints too; alice's undo takes back alice's stroke only
    assert (await alice.post("/api/projects/p/strokes", headers=OPERATOR, json={
        **STROKE, "points_xyz": [[40.5, 40.5, 5.5]]})).status == 200
    undo = await (await alice.post("/api/projects/p/undo")).json()
    assert undo["changed"]
    assert (await (await alice.post("/api/projects/p/undo")).json())["changed"] is False
    assert (await (await alice.get("/api/projects/p")).json())["can_undo"] is False
    # the operator's stroke is still in effect, theirs to undo
    operator = await (await alice.get("/api/projects/p", headers=OPERATOR)).json()
    assert operator["can_undo"] is True
    # each browser has its own viewer session
    await ws_b.close()
    await people_seen(ws_a, 1)
    await ws_a.close()
    await bob.close()


async def _first_state(client, client_id):
    resp = await client.get(f"/events/main?c={client_id}")
    assert resp.status == 200
    try:
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                message = json.loads(line[6:])
                if message["k"] == "s":
                    return message["s"], message["g"]
    finally:
        resp.close()


async def test_each_browser_has_its_own_viewer_session(make_client):
    from aiohttp.test_utils import TestClient

    alice = await make_client()
    link = await _link(alice, "viewer")
    bob = TestClient(alice.server)
    await bob.start_server()
    for client in (alice, bob):
        await client.get(link["url"].split(str(client.port), 1)[1])
    state, generation = await _first_state(alice, "a")
    moved = {**state, "position": [1.5, 2.5, 3.5]}
    resp = await alice.post("/state/main", json={"s": moved, "g": "1", "pg": generation,
                                                 "c": "a"})
    assert resp.status == 200, await resp.text()
    assert (await _first_state(alice, "a2"))[0]["position"] == [1.5, 2.5, 3.5]
    assert (await _first_state(bob, "b"))[0].get("position") != [1.5, 2.5, 3.5]
    await bob.close()


async def test_a_revoked_link_ends_the_viewer_event_stream(make_client):
    client = await make_client()
    link = await _link(client, "viewer")
    await client.get(link["url"].split(str(client.port), 1)[1])
    resp = await client.get("/events/main?c=x")
    assert resp.status == 200
    assert (await resp.content.readline()).startswith(b"data: ")
    await client.delete(f"/api/projects/p/links/{link['id']}", headers=OPERATOR)
    while await resp.content.readline():  # ends (EOF) once the server rechecks
        pass
    assert resp.content.at_eof()
    resp.close()


async def test_owners_give_signed_in_people_roles(make_client):
    from ilastik_web.server.auth import Principal
    from ilastik_web.server.context import CONTEXT_KEY

    client = await make_client()
    access = client.app[CONTEXT_KEY].access
    user = access.accounts.user_for_subject("https://idp|carol", "Carol")
    cookie = access.sessions.create(Principal(f"user:{user.id}", "Carol", user_id=user.id))
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
    assert (await client.get("/api/projects/p")).status == 403
    resp = await client.put(f"/api/projects/p/members/{user.id}", json={"role": "annotator"},
                            headers=OPERATOR)
    assert resp.status == 200
    assert (await client.post("/api/projects/p/strokes", json=STROKE)).status == 200
    members = await (await client.get("/api/projects/p/members", headers=OPERATOR)).json()
    assert members["members"] == [{"user_id": user.id, "name": "Carol", "role": "annotator"}]
    for body in ({"role": "king"}, {}):
        resp = await client.put(f"/api/projects/p/members/{user.id}", json=body,
                                headers=OPERATOR)
        assert resp.status == 400
    assert (await client.put("/api/projects/p/members/nobody", json={"role": None},
                             headers=OPERATOR)).status == 404
    await client.put(f"/api/projects/p/members/{user.id}", json={"role": None},
                     headers=OPERATOR)
    assert (await client.post("/api/projects/p/strokes", json=STROKE)).status == 403
