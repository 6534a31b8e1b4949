"""Schemathesis over /api/openapi.json of a running server with a real, trained project:
with real ids in the paths and bodies generated from the documented schemas, no answer
is a 5xx."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from hpc.service import JobService  # noqa: E402
from ilastik_web.config import ServerConfig  # noqa: E402
from ilastik_web.labels import Stroke  # noqa: E402
from ilastik_web.project import Project  # noqa: E402
from ilastik_web.resources import Resources  # noqa: E402
from ilastik_web.server.app import create_app, serve  # noqa: E402
from ilastik_web.server.layers import StaticLayer  # noqa: E402

#: Streams that never end by themselves.
SKIPPED = {"viewer_events"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, blobs):
    from ilastik_web.abc import MultiscaleVolume
    from ilastik_web.sources.array import ArrayVolume

    image, truth = blobs
    folder = tmp_path_factory.mktemp("schemathesis")
    resources = Resources(64 * 2**20, threads=2)
    volume = MultiscaleVolume("blobs", [ArrayVolume(image[None], voxel_size=(2.0, 1.0, 1.0),
                                                    chunk_shape=(8, 32, 32))])
    raw = StaticLayer("raw", volume, cache=resources.cache("sources"))
    project = Project.create(folder / "p", raw.volume("v0"), classes=["background", "blob"])
    for z in (6, 17):
        for label in (1, 2):
            ys, xs = np.nonzero(truth[z] == label)
            for i in (0, len(ys) // 2, len(ys) - 1):
                project.paint(Stroke(((z + 0.5, ys[i] + 0.5, xs[i] + 0.5),), radius=1.5,
                                     label=label))
    project.train()
    job = JobService(folder / "p" / "jobs").create(
        classifier=project.current_generation().classifier,
        computer=project.current_generation().computer, source="memory",
        output=folder / "job.zarr", format="ome-zarr", export="segmentation")
    import tifffile

    from ilastik_web.collections import Collection

    images = folder / "images"
    images.mkdir()
    for name in ("first", "second"):
        tifffile.imwrite(images / f"{name}.tif", image[6])
    app = create_app(ServerConfig(allowed_roots=(folder,)), layers=[raw],
                     projects=[("p", project, "raw")], resources=resources,
                     collection=Collection.from_folder(images))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    def run():
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve(app, "127.0.0.1", 0))
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(120)
    base = f"http://127.0.0.1:{holder['port']}"
    yield base, project, job.id
    loop.call_soon_threadsafe(loop.stop)
    thread.join(60)


def _with_real_ids(document: dict, project: Project, job_id: str) -> dict:
    ids = {
        "project_id": ["p"], "job_id": [job_id], "viewer_token": ["main"],
        "source_id": ["raw"],
        "layer_id": ["raw", "p-labels", "p-probabilities", "project-p-sam-objects"],
        "value": [1, 2], "scale_key": ["s0", "s1"], "item_id": ["first", "second"],
        "version": ["v0", f"r{project.labels.revision}-{project.uid}",
                    f"g{project.generation}-{project.uid}"],
    }
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in ids:
                    parameter["schema"] = {"enum": ids[parameter["name"]]}
    return document


@pytest.mark.slow
def test_no_request_from_the_documented_schemas_gets_a_5xx(server):
    base, project, job_id = server
    with urllib.request.urlopen(base + "/api/openapi.json", timeout=60) as response:
        document = json.loads(response.read())
    for operations in document["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body is not None:
                assert body["content"]["application/json"].get("schema"), operation
    schema = schemathesis.openapi.from_dict(_with_real_ids(document, project, job_id))
    failures = []
    count = 0
    def checker(operation):
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            nonlocal count
            response = case.call(base_url=base, timeout=120)
            count += 1
            if response.status_code >= 500:
                failures.append((operation.method.upper(), operation.path,
                                 response.status_code, response.text[:200]))

        return check

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") not in SKIPPED:
            checker(operation)()
    assert count > 200
    assert failures == [], failures[:10]
