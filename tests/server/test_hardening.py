"""Bad or costly input is a 4xx with a message, never a 500 or a hang; a full disk refuses
edits cleanly; label chunks under rN hold exactly revision N."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import pytest_asyncio

from ilastik_web.abc import Box
from ilastik_web.config import ServerConfig
from ilastik_web.labels import Stroke
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.layers import StaticLayer


def _app(blob_source, folder, classes=("background", "blob")):
    resources = Resources(64 * 2**20, threads=2)
    raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
    project = Project.create(folder, raw.volume("v0"), classes=list(classes))
    app = create_app(ServerConfig(), layers=[raw], projects=[("p", project, "raw")],
                     resources=resources)
    return app, project


@pytest_asyncio.fixture
async def served(aiohttp_client, tmp_path, blob_source):
    app, project = _app(blob_source, tmp_path / "p")
    return await aiohttp_client(app), project


def _dot(label, x=20.5, y=20.5, z=5.5, radius=2.0, **extra):
    return {"points_xyz": [[x, y, z]], "radius": radius, "label": label, **extra}


def _nested(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("body", [
    '{"points_xyz": [[1e300, 1e300, 1e300]], "radius": 2, "label": 1}',
    '{"points_xyz": [[1, 2, 3]], "radius": 2, "label": NaN}',
    '{"points_xyz": [[1, 2, 3]], "radius": 2, "label": Infinity}',
    '{"points_xyz": [[1, 2, 3]], "radius": 2, "label": -Infinity}',
    '{"points_xyz": [[1, 2, 3]], "radius": 2, "label": 1e400}',
    '{"points_xyz": [[1, 2, 3]], "radius": NaN, "label": 1}',
    '{"points_xyz": [[1, 2, 3]], "radius": 2, "label": 1.5}',
    '{"points_xyz": ' + _nested(100_000) + ', "radius": 2, "label": 1}',
    _nested(100_000),
    '{"points_xyz": [' + ",".join(["[1.5,2.5,3.5]"] * 700_000) + '], "radius": 1, "label": 1}',
    # 3D, radius 256, 1,000 points: each segment's box covers the whole (small) volume.
    '{"points_xyz": [' + ",".join(f"[{i % 60}.5,32.5,12.5]" for i in range(1000))
    + '], "radius": 256, "label": 1, "plane": "3d"}',
])
async def test_bad_or_costly_strokes_are_4xx_and_leave_nothing(served, body):
    client, project = served
    revision = project.labels.revision
    response = await client.post("/api/projects/p/strokes", data=body,
                                 headers={"Content-Type": "application/json"})
    assert 400 <= response.status < 500, await response.text()
    assert (await response.json())["error"]
    assert project.labels.revision == revision
    ok = await client.post("/api/projects/p/strokes", json=_dot(1))
    assert ok.status == 200 and (await ok.json())["revision"] == revision + 1


async def test_reopening_after_refused_input_works(tmp_path, aiohttp_client, blob_source):
    app, project = _app(blob_source, tmp_path / "p")
    client = await aiohttp_client(app)
    await client.post("/api/projects/p/strokes",
                      data='{"points_xyz": [[1e300, 1e300, 1e300]], "radius": 2, "label": 1}')
    await client.post("/api/projects/p/strokes", json=_dot(2))
    project.close()
    again = Project.open(tmp_path / "p", source=blob_source)
    assert again.labels.revision == 1 and again.labels.problems == []


async def test_deep_state_and_huge_chunk_numbers_are_4xx(served):
    client, project = served
    state = '{"s": ' + _nested(20_000, "{}") + ', "g": 1, "c": "A"}'
    response = await client.post("/state/main", data=state,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400 and "nested" in (await response.json())["error"]
    version = f"r{project.labels.revision}-{project.uid}"
    huge = "9" * 5000
    for url in (f"/precomputed/p-labels/{version}/s0/0-{huge}_0-64_0-1",
                f"/precomputed/p-labels/r{huge}-{project.uid}/s0/0-64_0-64_0-1",
                f"/precomputed/p-labels/{version}/s{huge}/0-64_0-64_0-1",
                f"/precomputed/raw/v{huge}/s0/0-64_0-64_0-1"):
        response = await client.get(url)
        assert 400 <= response.status < 500, (url[:80], response.status)


async def test_all_255_classes_in_use_is_answered(aiohttp_client, tmp_path, blob_source):
    app, _ = _app(blob_source, tmp_path / "p", classes=[f"c{i}" for i in range(255)])
    client = await aiohttp_client(app)
    response = await client.post("/api/projects/p/classes", json={"name": "one more"})
    assert response.status == 400 and "255" in (await response.json())["error"]


async def test_full_disk_refuses_edits_without_burning_revisions(
        small_tmpfs, fill_disk, aiohttp_client, blob_source):
    app, project = _app(blob_source, small_tmpfs / "p")
    client = await aiohttp_client(app)
    project.labels.checkpoint_every = None  # the log alone must hold every edit here
    acked = {}

    async def stroke(i):
        body = {"points_xyz": [[4.5 + i % 50 + k * 0.01, 4.5 + (i // 50) % 50, 2.5 + i % 20]
                               for k in range(300)], "radius": 1, "label": 1 + i % 2}
        return body, await client.post("/api/projects/p/strokes", json=body)

    i = 0
    for i in range(3):
        body, response = await stroke(i)
        assert response.status == 200
        acked[(await response.json())["revision"]] = body
    fillers = fill_disk(small_tmpfs)
    refused = 0
    for i in range(3, 40):
        body, response = await stroke(i)
        if response.status == 200:
            acked[(await response.json())["revision"]] = body
            continue
        assert response.status == 507, await response.text()
        refused += 1
    assert refused
    revision = project.labels.revision
    for _ in range(3):
        response = await client.post("/api/projects/p/undo")
        if response.status == 200:  # a few bytes may still fit an undo record
            revision = project.labels.revision
            continue
        assert response.status == 507
        assert project.labels.revision == revision
    for path in fillers:
        os.unlink(path)
    body, response = await stroke(99)
    assert response.status == 200
    assert (await response.json())["revision"] == revision + 1
    expected = project.labels.read(Box.from_shape(project.source.base.shape))
    project.close()
    again = Project.open(small_tmpfs / "p", source=blob_source)
    assert again.labels.problems == []
    assert again.labels.revision == revision + 1
    assert np.array_equal(again.labels.read(Box.from_shape(again.source.base.shape)), expected)


async def test_label_chunks_under_rN_hold_revision_N(served):
    """A painter edits as fast as it can while chunks of the current revision are fetched;
    every chunk served under rN must show exactly the strokes up to N."""
    client, project = served
    z_size, y_size, x_size = project.source.base.shape
    done: dict[int, tuple[int, int, int]] = {}  # revision -> (z, y, x) of its dot
    stop = threading.Event()

    def painter():
        i = 0
        while not stop.is_set() and i < 2000:
            z, y, x = i % z_size, 2 + 4 * ((i // z_size) % 15), 2 + 4 * ((i // z_size // 15) % 15)
            result = project.paint(Stroke(((z + 0.5, y + 0.5, x + 0.5),), radius=0.5,
                                          label=1))
            done[result.revision] = (z, y, x)
            i += 1

    thread = threading.Thread(target=painter)
    thread.start()
    served_chunks = []
    try:
        for attempt in range(400):
            revision = project.labels.revision
            z = attempt % z_size
            response = await client.get(f"/precomputed/p-labels/r{revision}-{project.uid}/s0/"
                                        f"0-{x_size}_0-{y_size}_{z}-{z + 1}")
            if response.status == 410:
                continue
            assert response.status == 200, await response.text()
            served_chunks.append((revision, z, await response.read()))
    finally:
        stop.set()
        thread.join()
    assert len(served_chunks) > 10
    for revision, z, body in served_chunks:
        plane = np.frombuffer(body, np.uint8).reshape(y_size, x_size)
        for rev, (dz, dy, dx) in done.items():
            if dz == z:
                assert plane[dy, dx] == (1 if rev <= revision else 0), (revision, rev)
