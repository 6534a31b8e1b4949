"""The image collection routes on the real app: items, per-user navigation and claims, SAM
objects into annotations/, training-set export and pixel training as tasks, the layers whose
versions name the item."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import tifffile

from ilastik_web.collections import Collection
from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.layers import StaticLayer

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
_SAM_TESTS = str(Path(__file__).resolve().parents[1] / "sam")
if _SAM_TESTS not in sys.path:
    sys.path.insert(0, _SAM_TESTS)
from sam_fixtures import blobs, build_tiny_sam  # noqa: E402

OPERATOR = {"Authorization": "Bearer operator"}


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for n, name in enumerate(("first", "second", "third")):
        data = blobs((1, 48, 64), seed=n)[0]
        tifffile.imwrite(folder / f"{name}.tif", (data * 255 / max(1, data.max())).astype(np.uint8))
    return folder


@pytest_asyncio.fixture
async def world(aiohttp_client, tmp_path, images, blob_source):
    checkpoint = tmp_path / "tiny.pt"
    torch.save(build_tiny_sam().state_dict(), checkpoint)
    resources = Resources(128 << 20, threads=2)
    raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
    project = Project.create(tmp_path / "p", raw.volume("v0"), classes=["a", "b"])
    app = create_app(ServerConfig(token="operator", sam_models=(f"tiny=vit_b:{checkpoint}",),
                                  sam_device="cpu"),
                     layers=[raw], projects=[("p", project, "raw")], resources=resources,
                     collection=Collection.from_folder(images))
    client = await aiohttp_client(app)
    accounts = app[CONTEXT_KEY].access.accounts
    people = {name: {"Authorization": f"Bearer {accounts.create_link('p', 'annotator')[1]}"}
              for name in ("alice", "bob")}
    people["viewer"] = {"Authorization": f"Bearer {accounts.create_link('p', 'viewer')[1]}"}
    return client, people


async def _json(response, status=200):
    assert response.status == status, await response.text()
    return await response.json()


async def _prompt(client, who, view, at=(20.5, 20.5)):
    return await _json(await client.post("/api/sam/prompt", headers=who, json={
        "layer_id": view["image"]["layer_id"], "version": view["image"]["version"],
        "plane": "xy", "box_xyz": [[at[0] - 12, at[1] - 12, 0], [at[0] + 12, at[1] + 12, 1]]}))


async def _task(client, task_id):
    for _ in range(600):
        task = await _json(await client.get(f"/api/collection/tasks/{task_id}", headers=OPERATOR))
        if task["state"] in ("done", "failed", "cancelled"):
            return task
        await asyncio.sleep(0.1)
    raise AssertionError("the task did not finish")


async def test_two_annotators_take_different_items_and_save_beside_the_data(world, images):
    client, people = world
    listing = await _json(await client.get("/api/collection", headers=people["viewer"]))
    assert [i["id"] for i in listing["items"]] == ["first", "second", "third"]
    assert listing["annotated"] == 0 and listing["layers"]["image"] == "collection"

    alice = await _json(await client.post("/api/collection/navigate", headers=people["alice"],
                                          json={"to": "unannotated"}))
    bob = await _json(await client.post("/api/collection/navigate", headers=people["bob"],
                                        json={"to": "unannotated"}))
    assert alice["item"]["id"] == "first" and bob["item"]["id"] == "second"
    assert alice["item"]["mine"] and not alice["item"]["annotated"]
    assert alice["image"]["version"] != bob["image"]["version"]
    # A viewer may look but not claim.
    refused = await client.post("/api/collection/navigate", headers=people["viewer"],
                                json={"to": "unannotated"})
    assert refused.status == 403

    # Each item's image is served under its own version, at its own shape.
    info = await _json(await client.get(
        f"/precomputed/collection/{bob['image']['version']}/info", headers=OPERATOR))
    assert info["scales"][0]["size"] == [64, 48, 1]

    # Alice's SAM preview on her item becomes object 1 of its annotation.
    mask = await _prompt(client, people["alice"], alice)
    added = await _json(await client.post("/api/collection/items/first/objects",
                                          headers=people["alice"],
                                          json={"mask_id": mask["mask_id"], "class": "cell"}))
    assert added["object_id"] == 1 and added["item"]["annotated"]
    assert added["objects"]["version"] != alice["objects"]["version"]
    assert added["object_list"] == [{"id": 1, "class": "cell", "source": "sam"}]
    meta = json.loads((images / "annotations" / "first.json").read_text())
    assert meta["author"].startswith("link:") and meta["classes"] == {"1": "cell"}
    labels = tifffile.imread(images / "annotations" / "first.tif")
    assert labels.shape == (1, 48, 64) and (labels == 1).sum() == mask["voxels"] > 0
    # The old objects version is gone; the new one serves the object.
    gone = await client.get(f"/precomputed/collection-objects/{alice['objects']['version']}"
                            "/s0/0-64_0-48_0-1", headers=OPERATOR)
    assert gone.status == 410

    # Bob cannot add to Alice's item, nor use a mask of another item for his.
    other = await _prompt(client, people["bob"], alice)
    refused = await client.post("/api/collection/items/first/objects", headers=people["bob"],
                                json={"mask_id": other["mask_id"]})
    assert refused.status == 403 and "annotated by" in await refused.text()
    wrong = await client.post("/api/collection/items/second/objects", headers=people["bob"],
                              json={"mask_id": other["mask_id"]})
    assert wrong.status == 400
    own = await _prompt(client, people["bob"], bob, at=(40.5, 30.5))
    await _json(await client.post("/api/collection/items/second/objects", headers=people["bob"],
                                  json={"mask_id": own["mask_id"], "class": "nucleus"}))

    # Status lists who annotated what; the provider's images are untouched.
    listing = await _json(await client.get("/api/collection", headers=people["alice"]))
    status = {i["id"]: i for i in listing["items"]}
    assert status["first"]["annotated"] and status["second"]["annotated"]
    assert status["first"]["mine"] and not status["second"]["mine"]
    assert not status["third"]["annotated"]
    assert sorted(p.name for p in images.iterdir()) == [
        "annotations", "first.tif", "second.tif", "third.tif"]

    # Next / previous move through the items; past the end there is none.
    nxt = await _json(await client.post("/api/collection/navigate", headers=people["alice"],
                                        json={"from": "second", "to": "next"}))
    assert nxt["item"]["id"] == "third"
    end = await _json(await client.post("/api/collection/navigate", headers=people["alice"],
                                        json={"from": "third", "to": "next"}))
    assert end["item"] is None
    bad = await client.post("/api/collection/navigate", headers=people["alice"],
                            json={"to": "sideways"})
    assert bad.status == 400

    # Deleting the last object makes the item unannotated again.
    deleted = await _json(await client.delete("/api/collection/items/second/objects/1",
                                              headers=people["bob"]))
    assert not deleted["item"]["annotated"]
    assert not (images / "annotations" / "second.json").exists()


async def test_export_and_pixel_training_are_tasks(world, images):
    client, people = world
    for item, at in (("first", (20.5, 20.5)), ("second", (30.5, 24.5))):
        view = await _json(await client.get(f"/api/collection/items/{item}", headers=OPERATOR))
        mask = await _prompt(client, OPERATOR, view, at=at)
        await _json(await client.post(f"/api/collection/items/{item}/objects", headers=OPERATOR,
                                      json={"mask_id": mask["mask_id"], "class": "cell"}))
    # Exporting needs the owner role.
    refused = await client.post("/api/collection/exports", headers=people["alice"], json={})
    assert refused.status == 403
    task = await _json(await client.post("/api/collection/exports", headers=OPERATOR, json={
        "layout": "ome-zarr", "val_fraction": 0.5, "name": "round1"}), 202)
    done = await _task(client, task["id"])
    assert done["state"] == "done", done
    out = images / "annotations" / "training-sets" / "round1"
    assert done["result"]["path"] == str(out) and sorted(done["result"]["splits"].values()) == [
        "train", "val"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {i["item"] for i in manifest["items"]} == {"first", "second"}
    again = await client.post("/api/collection/exports", headers=OPERATOR,
                              json={"name": "round1"})
    assert again.status == 400
    for body in ({"layout": "png"}, {"val_fraction": 1.5}, {"name": "../up"}):
        assert (await client.post("/api/collection/exports", headers=OPERATOR,
                                  json=body)).status == 400

    # Pixel classification on both annotated items; then every item has a prediction.
    view = await _json(await client.get("/api/collection/items/third", headers=OPERATOR))
    assert view["prediction"] is None
    task = await _json(await client.post("/api/collection/train", headers=people["alice"]), 202)
    done = await _task(client, task["id"])
    assert done["state"] == "done", done
    assert set(done["result"]["items"]) == {"first", "second"}
    assert [c["name"] for c in done["result"]["classes"]] == ["background", "cell"]
    view = await _json(await client.get("/api/collection/items/third", headers=OPERATOR))
    version = view["prediction"]["version"]
    info = await _json(await client.get(f"/precomputed/collection-prediction/{version}/info",
                                        headers=OPERATOR))
    assert info["type"] == "segmentation"
    chunk = await client.get(f"/precomputed/collection-prediction/{version}/"
                             f"{info['scales'][0]['key']}/0-64_0-48_0-1", headers=OPERATOR)
    assert chunk.status == 200, await chunk.text()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/api/collection/items/nothere", None),
    ("GET", "/api/collection/items/..%2Fsecret", None),
    ("POST", "/api/collection/navigate", {"to": "next", "from": "nothere"}),
    ("POST", "/api/collection/navigate", {"to": "next", "from": 3}),
    ("POST", "/api/collection/navigate", [1, 2]),
    ("POST", "/api/collection/items/first/objects", {}),
    ("POST", "/api/collection/items/first/objects", {"mask_id": "nomask"}),
    ("POST", "/api/collection/items/nothere/objects", {"mask_id": "nomask"}),
    ("DELETE", "/api/collection/items/first/objects/abc", None),
    ("DELETE", "/api/collection/items/first/objects/7", None),
    ("POST", "/api/collection/train", None),  # nothing annotated yet
    ("GET", "/api/collection/tasks/notask", None),
    ("GET", "/precomputed/collection/c9-00000000/info", None),
    ("GET", "/precomputed/collection/c99/info", None),
    ("GET", "/precomputed/collection-objects/o0r5-00000000/info", None),
])
async def test_bad_requests_are_4xx(world, method, path, body):
    client, _ = world
    kwargs = {} if body is None else {"json": body}
    response = await client.request(method, path, headers=OPERATOR, **kwargs)
    assert 400 <= response.status < 500, (response.status, await response.text())


async def test_an_invalid_class_name_or_body_is_refused(world):
    client, _ = world
    view = await _json(await client.get("/api/collection/items/first", headers=OPERATOR))
    mask = await _prompt(client, OPERATOR, view)
    for body in ({"mask_id": mask["mask_id"], "class": ""},
                 {"mask_id": mask["mask_id"], "class": "x" * 100},
                 {"mask_id": mask["mask_id"], "class": 3}):
        response = await client.post("/api/collection/items/first/objects", headers=OPERATOR,
                                     json=body)
        assert response.status == 400, await response.text()
    response = await client.post("/api/collection/items/first/objects",
                                 headers={**OPERATOR, "Content-Type": "application/json"},
                                 data=b"{not json")
    assert response.status == 400
    # Nothing was stored by the refused requests.
    listing = await _json(await client.get("/api/collection", headers=OPERATOR))
    assert listing["annotated"] == 0


async def test_without_a_collection_the_routes_answer_404(aiohttp_client):
    client = await aiohttp_client(create_app(ServerConfig()))
    response = await client.get("/api/collection")
    assert response.status == 200 and (await response.json()) == {"served": False}
    response = await client.post("/api/collection/navigate", json={"to": "next"})
    assert response.status == 404 and "--collection" in await response.text()


INSTANCES = "/api/instances/collection-objects"
SQUARE = [[8.0, 8.0, 0.5], [32.0, 8.0, 0.5], [32.0, 32.0, 0.5], [8.0, 32.0, 0.5]]


async def _edit(client, who, method, path, version, body=None, status=200):
    kwargs = {} if body is None else {"json": body}
    return await _json(await client.request(method, f"{INSTANCES}{path}",
                                            params={"version": version}, headers=who,
                                            **kwargs), status)


def _stored(images, item):
    meta = json.loads((images / "annotations" / f"{item}.json").read_text())
    return meta, tifffile.imread(images / "annotations" / f"{item}.tif")


async def test_instance_tools_edit_the_item_the_version_names(world, images):
    client, people = world
    alice = await _json(await client.post("/api/collection/navigate", headers=people["alice"],
                                          json={"to": "unannotated"}))
    await _json(await client.post("/api/collection/navigate", headers=people["bob"],
                                  json={"to": "unannotated"}))
    version = alice["objects"]["version"]
    layer = await _json(await client.get(INSTANCES, params={"version": version},
                                         headers=people["alice"]))
    assert layer["item_id"] == "first" and layer["objects"] == [] and not layer["can_undo"]

    # A polygon on Alice's item: object 1, class "cell", source "polygon", in annotations/.
    drawn = await _edit(client, people["alice"], "POST", "/polygon", version,
                        {"vertices_xyz": SQUARE, "class": "cell"})
    assert drawn["object_id"] == 1 and drawn["version"] != version
    assert f"/precomputed/collection-objects/{drawn['version']}" in drawn["precomputed"]
    meta, labels = _stored(images, "first")
    assert meta["classes"] == {"1": "cell"} and meta["sources"] == {"1": "polygon"}
    assert meta["author"].startswith("link:") and (labels == 1).sum() == 24 * 24
    view = await _json(await client.get("/api/collection/items/first", headers=OPERATOR))
    assert view["objects"]["version"] == drawn["version"] and view["item"]["annotated"]
    assert view["object_list"] == [{"id": 1, "class": "cell", "source": "polygon"}]

    # An edit from the superseded version is a conflict; Bob may not edit Alice's item.
    stale = await client.post(f"{INSTANCES}/polygon", params={"version": version},
                              headers=people["alice"], json={"vertices_xyz": SQUARE})
    assert stale.status == 409 and "reload" in await stale.text()
    refused = await client.post(f"{INSTANCES}/polygon", params={"version": drawn["version"]},
                                headers=people["bob"], json={"vertices_xyz": SQUARE})
    assert refused.status == 403 and "annotated by" in await refused.text()
    for path in ("/undo", "/objects/1"):
        method = "POST" if path == "/undo" else "DELETE"
        response = await client.request(method, f"{INSTANCES}{path}", headers=people["bob"],
                                        params={"version": drawn["version"]})
        assert response.status == 403
    assert _stored(images, "first")[0]["sources"] == {"1": "polygon"}

    # Brush: a new object of the default class; the cutter's part keeps the cut one's class.
    brushed = await _edit(client, people["alice"], "POST", "/brush", drawn["version"],
                          {"points_xyz": [[48.0, 20.0, 0.5]], "radius": 3, "plane": "xy"})
    assert brushed["object_id"] == 2
    cut = await _edit(client, people["alice"], "POST", "/cut", brushed["version"],
                      {"object_id": 1, "vertices_xyz": [[14.0, 4.0, 0.5], [14.0, 36.0, 0.5]]})
    assert cut["object_id"] == 3
    meta, labels = _stored(images, "first")
    assert meta["classes"] == {"1": "cell", "2": "object", "3": "cell"}
    assert meta["sources"] == {"1": "polygon", "2": "brush", "3": "polygon"}
    assert (labels == 3).sum() == 6 * 24 and (labels == 1).sum() == 18 * 24

    # Merge back, undo and redo it: the annotation follows each step.
    merged = await _edit(client, people["alice"], "POST", "/merge", cut["version"],
                         {"object_ids": [1, 3]})
    assert set(_stored(images, "first")[0]["classes"]) == {"1", "2"}
    undone = await _edit(client, people["alice"], "POST", "/undo", merged["version"])
    assert undone["changed"] and set(_stored(images, "first")[0]["classes"]) == {"1", "2", "3"}
    redone = await _edit(client, people["alice"], "POST", "/redo", undone["version"])
    assert set(_stored(images, "first")[0]["classes"]) == {"1", "2"}

    # Deleting every object leaves the item unannotated; undo brings the annotation back.
    after = await _edit(client, people["alice"], "DELETE", "/objects/2", redone["version"])
    after = await _edit(client, people["alice"], "DELETE", "/objects/1", after["version"])
    assert not (images / "annotations" / "first.json").exists()
    back = await _edit(client, people["alice"], "POST", "/undo", after["version"])
    meta, labels = _stored(images, "first")
    assert back["changed"] and meta["classes"] == {"1": "cell"}
    assert (labels == 1).sum() == 24 * 24
    # Nothing on the project's instance layer changed.
    project = await _json(await client.post("/api/instances/layers", headers=OPERATOR,
                                            json={"project_id": "p"}))
    assert project["objects"] == []


@pytest.mark.parametrize(("method", "path", "params", "body"), [
    ("POST", "/polygon", {}, {"vertices_xyz": SQUARE}),  # no version
    ("POST", "/polygon", {"version": "o0r0-zzzzzzzz"}, {"vertices_xyz": SQUARE}),
    ("POST", "/polygon", {"version": "o9r0-{uid}"}, {"vertices_xyz": SQUARE}),
    ("POST", "/polygon", {"version": "o0r7-{uid}"}, {"vertices_xyz": SQUARE}),
    ("POST", "/polygon", {"version": "{v}"}, {"vertices_xyz": SQUARE, "class": ""}),
    ("POST", "/polygon", {"version": "{v}"}, {"vertices_xyz": SQUARE, "class": 5}),
    ("POST", "/polygon", {"version": "{v}"}, {"vertices_xyz": [[1, 2]]}),
    ("POST", "/polygon", {"version": "{v}"},
     {"vertices_xyz": [[1e6, 1, 0.5], [1e6 + 5, 1, 0.5], [1e6, 9, 0.5]]}),
    ("POST", "/brush", {"version": "{v}"}, {"points_xyz": "nope", "radius": 2}),
    ("POST", "/merge", {"version": "{v}"}, {"object_ids": [1, 2]}),
    ("DELETE", "/objects/4", {"version": "{v}"}, None),
    ("GET", "/at", {"version": "{v}", "x": "1"}, None),
])
async def test_bad_instance_requests_on_items_are_4xx(world, images, method, path, params, body):
    client, _ = world
    view = await _json(await client.get("/api/collection/items/first", headers=OPERATOR))
    version = view["objects"]["version"]
    uid = version.rpartition("-")[2]
    params = {k: v.format(v=version, uid=uid) for k, v in params.items()}
    kwargs = {} if body is None else {"json": body}
    response = await client.request(method, f"{INSTANCES}{path}", params=params,
                                    headers=OPERATOR, **kwargs)
    assert 400 <= response.status < 500, (response.status, await response.text())
    assert not (images / "annotations" / "first.json").exists()
