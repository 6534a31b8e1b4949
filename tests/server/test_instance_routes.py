"""Instance tools over HTTP (real app factory, in-process client): every tool, 4xx with a
message on bad input, and one undo history with the project's labels."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

from ilastik_web.abc import Box
from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.layers import StaticLayer

LAYER = "project-p-sam-objects"


@pytest_asyncio.fixture
async def world(aiohttp_client, tmp_path, blob_source):
    resources = Resources(128 << 20, threads=2)
    raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
    project = Project.create(tmp_path / "p", raw.volume("v0"), classes=["a", "b"],
                             resources=resources)
    app = create_app(ServerConfig(), layers=[raw], projects=[("p", project, "raw")],
                     resources=resources)
    return await aiohttp_client(app), project


def square(x0, y0, x1, y1, z=2.5):
    return [[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]


async def post(client, path, body, status=200):
    resp = await client.post(path, json=body)
    text = await resp.text()
    assert resp.status == status, text
    return await resp.json() if status == 200 else text


async def test_the_tools_over_http(world):
    client, project = world
    made = await post(client, "/api/instances/layers", {"project_id": "p"})
    assert made["layer_id"] == LAYER and made["objects"] == [] and not made["can_undo"]
    a = (await post(client, f"/api/instances/{LAYER}/polygon",
                    {"vertices_xyz": square(2, 2, 12, 12)}))["object_id"]
    b = (await post(client, f"/api/instances/{LAYER}/polygon",
                    {"vertices_xyz": square(20, 2, 30, 12)}))["object_id"]
    at = await (await client.get(f"/api/instances/{LAYER}/at?x=5.5&y=5.5&z=2.5")).json()
    assert at == {"object_id": a}
    split = await post(client, f"/api/instances/{LAYER}/cut",
                       {"object_id": a, "vertices_xyz": [[9.5, 0, 2.5], [9.5, 14, 2.5]]})
    c = split["object_id"]
    store = project.instances
    plane = store.read(Box((2, 0, 0), (3, 14, 32)))[0]
    assert (plane[2:12, 10:12] == c).all() and (plane[2:12, 2:9] == a).all()
    await post(client, f"/api/instances/{LAYER}/brush",
               {"object_id": b, "points_xyz": [[25.5, 20.5, 2.5]], "radius": 2})
    await post(client, f"/api/instances/{LAYER}/merge", {"object_ids": [a, c]})
    outline = await (await client.get(
        f"/api/instances/{LAYER}/objects/{b}/outline?plane=xy&index=2")).json()
    assert len(outline["polygons_xyz"]) == 2  # the square and the brush dab
    await post(client, f"/api/instances/{LAYER}/polygon",
               {"vertices_xyz": square(20, 2, 24, 6), "object_id": b, "replace": True})
    resp = await client.delete(f"/api/instances/{LAYER}/objects/{a}")
    assert resp.status == 200
    listed = await (await client.get(f"/api/instances/{LAYER}")).json()
    assert [o["id"] for o in listed["objects"]] == [b] and listed["can_undo"]
    assert listed["objects"][0]["sources"] == ["polygon", "brush", "polygon"]

    # Undo walks back through instance and label edits alike.
    stroke = {"points_xyz": [[40.5, 40.5, 2.5]], "radius": 1.5, "label": 1, "plane": "xy"}
    assert (await post(client, "/api/projects/p/strokes", stroke))["revision"] == 1
    undone = await post(client, f"/api/instances/{LAYER}/undo", {})
    assert undone["target"] == "labels" and project.labels.revision == 2
    undone = await post(client, "/api/projects/p/undo", {})
    assert undone["target"] == "instances" and a in store.object_ids
    redone = await post(client, f"/api/instances/{LAYER}/redo", {})
    assert redone["target"] == "instances" and a not in store.object_ids
    info = await (await client.get("/api/projects/p")).json()
    assert info["can_undo"] and info["can_redo"]


@pytest.mark.parametrize("path, body, status, message", [
    ("polygon", {"vertices_xyz": [[1, 1, 1], [2, 2, 1]]}, 400, "vertices"),
    ("polygon", {"vertices_xyz": "nope"}, 400, "vertices_xyz"),
    ("polygon", {"vertices_xyz": square(1, 1, 5, 5), "object_id": 99}, 404, "no object 99"),
    ("polygon", {"vertices_xyz": square(1, 1, 5, 5), "plane": "ab"}, 400, "plane"),
    ("polygon", {"vertices_xyz": square(1, 1, 5, 5, z=999)}, 400, "slice"),
    ("polygon", {"vertices_xyz": square(1, 1, 5, 5), "replace": True}, 400, "object_id"),
    ("cut", {"object_id": 1, "vertices_xyz": [[1, 1, 2.5], [2, 2, 2.5]]}, 400, "does not cut"),
    ("cut", {"object_id": 1, "vertices_xyz": [[1, 1, 0.5], [2, 2, 0.5]]}, 400, "no voxel"),
    ("cut", {"object_id": 1, "mode": "trim", "vertices_xyz": square(1, 1, 5, 5)}, 400,
     "no voxel of object 1"),
    ("cut", {"object_id": "x", "vertices_xyz": []}, 400, "object_id"),
    ("brush", {"points_xyz": [[1, 1, 1]], "radius": 2, "erase": True}, 400, "eraser"),
    ("merge", {"object_ids": [1]}, 400, "keep, other"),
    ("clear", {"object_id": 1}, 400, "index"),
])
async def test_bad_requests_answer_4xx_with_a_message(world, path, body, status, message):
    client, project = world
    await post(client, f"/api/instances/{LAYER}/polygon", {"vertices_xyz": square(30, 30, 35, 35)})
    text = await post(client, f"/api/instances/{LAYER}/{path}", body, status)
    assert message in text


async def test_unknown_layers_and_objects_are_404(world):
    client, _ = world
    assert (await client.get("/api/instances/nope-sam-objects")).status == 404
    assert (await client.delete(f"/api/instances/{LAYER}/objects/7")).status == 404
    assert (await client.get(f"/api/instances/{LAYER}/at?x=1")).status == 400
    resp = await client.post("/api/instances/layers", json={"layer_id": "nope"})
    assert resp.status == 404
    made = await (await client.post("/api/instances/layers", json={"layer_id": "raw"})).json()
    assert made["layer_id"] == "layer-raw-sam-objects" and made["project_id"] is None
    assert np.asarray(made["objects"]).size == 0
