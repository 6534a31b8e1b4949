"""The class-probability readout at a voxel, and the feature-channel route, through the real
app factory and aiohttp's in-process client."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio
from test_project_routes import _paint_training_set

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.layers import StaticLayer
from ilastik_web.sources.array import ArrayVolume


@pytest.fixture
def served_project(tmp_path, blobs):
    image, _ = blobs
    # two channels: the blobs, and their negative
    stack = np.stack([image, image.max() - image])
    source = MultiscaleVolume("two", [ArrayVolume(stack, voxel_size=(2.0, 1.0, 1.0),
                                                  chunk_shape=(8, 32, 32))])
    resources = Resources(256 << 20, threads=2)
    raw = StaticLayer("raw", source, cache=resources.cache("sources"))
    project = Project.create(tmp_path / "p", raw.volume("v0"), classes=["background", "blob"],
                             resources=resources)
    return raw, project, resources


@pytest_asyncio.fixture
async def client(aiohttp_client, served_project):
    raw, project, resources = served_project
    app = create_app(ServerConfig(), layers=[raw], projects=[("p", project, "raw")],
                     resources=resources)
    return await aiohttp_client(app)


async def test_probabilities_at_a_voxel_are_named_by_class(client, served_project, blobs):
    _, project, _ = served_project
    missing = await client.get("/api/projects/p/probabilities?x=3&y=4&z=5")
    assert missing.status == 503  # no classifier yet
    await client.patch("/api/projects/p/classes/2", json={"name": "cells"})
    await _paint_training_set(client, blobs)
    assert (await client.post("/api/projects/p/train")).status == 200
    version = (await (await client.get("/api/projects/p")).json())["layers"][
        "probabilities"]["version"]
    # the viewer draws the xy chunk at z = 6 first; the readout then comes from it
    chunk = await client.get(f"/precomputed/p-probabilities/{version}/s0/0-64_0-64_6-7")
    drawn = np.frombuffer(await chunk.read(), np.uint8).reshape(2, 64, 64)
    for x, y in ((3, 4), (40, 21), (63, 63)):
        resp = await client.get(f"/api/projects/p/probabilities?x={x}&y={y}&z=6")
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["position_xyz"] == [x, y, 6] and body["generation"] == 1
        assert [(c["value"], c["name"], c["color"]) for c in body["classes"]] == [
            (1, "background", "#ff0000"), (2, "cells", "#00ff00")]
        got = [c["probability"] for c in body["classes"]]
        assert got == [round(v / 255, 4) for v in drawn[:, y, x].tolist()]
    # elsewhere (nothing drawn there): computed for that voxel, the same numbers
    box_proba = project.predict(Box((20, 30, 10), (21, 31, 11)))
    body = await (await client.get("/api/projects/p/probabilities?x=10&y=30&z=20")).json()
    expected = np.clip(np.rint(box_proba[:, 0, 0, 0] * 255), 0, 255) / 255
    assert [c["probability"] for c in body["classes"]] == [round(v, 4) for v in expected]
    for query in ("x=64&y=0&z=0", "x=0&y=0", "x=a&y=0&z=0", "x=-1&y=0&z=0"):
        resp = await client.get(f"/api/projects/p/probabilities?{query}")
        assert resp.status == 400, query


async def test_feature_channels_route(client, served_project):
    _, project, _ = served_project
    features = await (await client.get("/api/projects/p/features")).json()
    assert features["channels"] == [0, 1] and features["num_channels"] == 2
    resp = await client.put("/api/projects/p/feature_channels", json={"channels": [1]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["channels"] == [1]
    assert project.feature_channels == (1,)
    assert (await (await client.get("/api/projects/p")).json())["feature_channels"] == [1]
    for body in ({"channels": []}, {"channels": [2]}, {"channels": [0, 0]},
                 {"channels": ["0"]}, {"channels": "all"}, {}):
        resp = await client.put("/api/projects/p/feature_channels", json=body)
        assert resp.status == 400, body
    assert project.feature_channels == (1,)
    resp = await client.put("/api/projects/p/feature_channels", json={"channels": None})
    assert (await resp.json())["channels"] == [0, 1]
