"""End to end, as on the cloud: the volume lives in Swift, the job goes to Slurm through
slurmrestd (JWT), its workers read Swift and write the export back to Swift."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
from conftest import paint_and_train, served, slurm_engine, write_zarr

from hpc.job import DONE
from hpc.service import JobService
from ilastik_web.abc import Box
from ilastik_web.sources import open_source
from ilastik_web.sources.s3 import kvstore_spec

pytestmark = pytest.mark.slurm

SETTINGS = ("ILASTIK_WEB_S3_ENDPOINT", "AWS_REGION", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY")


def _upload(local: Path, bucket: str, key: str) -> None:
    destination = ts.KvStore.open(kvstore_spec(bucket, key)).result()
    writes = [destination.write(p.relative_to(local).as_posix(), p.read_bytes())
              for p in local.rglob("*") if p.is_file()]
    for write in writes:
        write.result()


def test_swift_volume_exported_to_swift_by_a_slurmrestd_job(swift, slurmrestd,
                                                            trained_project, tmp_path):
    swift.create_container("lab-data")
    swift.create_container("lab-results")
    prefix = uuid.uuid4().hex
    _upload(Path(trained_project.source_location), "lab-data", f"{prefix}/raw.zarr")
    source = f"s3://lab-data/{prefix}/raw.zarr"
    output = f"s3://lab-results/{prefix}/segmentation.ome.zarr"
    # The workers' storage settings travel in a 0600 file on shared storage, never in
    # the job's description or the REST request.
    env_file = tmp_path / "worker.env"
    env_file.write_text("".join(f"{name}={os.environ[name]}\n" for name in SETTINGS))
    env_file.chmod(0o600)
    engine = slurm_engine("slurm-rest", slurmrestd, workers=0, blocks_per_task=4,
                          env_file=str(env_file))
    service = JobService(tmp_path / "jobs")
    job = service.submit_from_project(trained_project, output=output, format="ome-zarr",
                                      export="segmentation", engine=engine, source=source)
    summary = service.wait(job.id, timeout=600)
    assert summary["state"] == DONE, job.logs()
    assert summary["engine"] == "slurm-rest" and summary["source"] == source
    record = (job.folder / "job.json").read_text()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in record
    assert "rest.jwt" in record and open(slurmrestd["rest_token_file"]).read().strip() \
        .split("=", 1)[-1] not in record
    result = open_source(output).base
    np.testing.assert_array_equal(result.read(Box.from_shape(result.shape)),
                                  served(trained_project, "segmentation"))


async def _route_submissions(project, engine, tmp_path):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from ilastik_web.cache import ArrayCache
    from ilastik_web.server.errors import error_middleware
    from ilastik_web.server.layers import LayerRegistry
    from ilastik_web.server.projects import ProjectHub
    from ilastik_web.server.routes_jobs import job_routes
    from ilastik_web.server.routing import RouteTable

    hub = ProjectHub(LayerRegistry(), ArrayCache(1 << 20))
    hub.add("p", project, source_layer_id="raw")
    executor = ThreadPoolExecutor(2)
    app = web.Application(middlewares=[error_middleware])
    roots = [tmp_path, Path("s3://lab-results/allowed")]
    RouteTable(job_routes(hub, executor, allowed_roots=roots, engines={"hpc": engine})) \
        .register(app)
    prefix = uuid.uuid4().hex
    async with TestClient(TestServer(app)) as client:
        # A request names a configured engine; it cannot point at a slurmrestd itself.
        rogue = await client.post("/api/projects/p/jobs", json={
            "export": "segmentation", "output": str(tmp_path / "rogue.ome.zarr"),
            "engine": {"kind": "slurm-rest", "rest_url": "http://evil.example"}})
        assert rogue.status == 400, await rogue.text()
        outside = await client.post("/api/projects/p/jobs", json={
            "export": "segmentation", "output": f"s3://lab-results/{prefix}/x.ome.zarr",
            "engine": "hpc"})
        assert outside.status == 403
        response = await client.post("/api/projects/p/jobs", json={
            "export": "segmentation", "roi": "0:8,0:64,0:64", "engine": "hpc",
            "output": f"s3://lab-results/allowed/{prefix}/x.ome.zarr"})
        assert response.status == 201, await response.text()
        job = await response.json()
        assert job["engine"] == "slurm-rest"
        while job["state"] in ("PENDING", "RUNNING"):
            await asyncio.sleep(0.5)
            job = await (await client.get(f"/api/projects/p/jobs/{job['id']}")).json()
    executor.shutdown()
    return job


def test_server_routes_submit_over_slurmrestd_to_swift(swift, slurmrestd, blobs, tmp_path):
    import asyncio

    from ilastik_web.project import Project

    # A project of its own: the route writes job records into the project folder.
    image, truth = blobs
    trained_project = Project.create(tmp_path / "project",
                                     write_zarr(tmp_path / "raw.zarr", image),
                                     classes=["background", "blob"])
    paint_and_train(trained_project, truth)

    swift.create_container("lab-results")
    env_file = tmp_path / "worker.env"
    env_file.write_text("".join(f"{name}={os.environ[name]}\n" for name in SETTINGS))
    env_file.chmod(0o600)
    engine = slurm_engine("slurm-rest", slurmrestd, workers=0, blocks_per_task=4,
                          env_file=str(env_file))
    job = asyncio.run(_route_submissions(trained_project, engine, tmp_path))
    assert job["state"] == DONE, job
    result = open_source(job["output"]).base
    box = Box((0, 0, 0), (8, 64, 64))
    np.testing.assert_array_equal(result.read(Box.from_shape(result.shape)),
                                  served(trained_project, "segmentation", box))


async def test_health_checks_real_swift_and_slurmrestd(swift, slurmrestd, aiohttp_client):
    from hpc.job import EngineSpec
    from ilastik_web.config import ServerConfig
    from ilastik_web.server.app import create_app

    swift.create_container("lab-results")
    config = ServerConfig(allowed_roots=(Path("s3://lab-results/allowed"),),
                          engines={"hpc": EngineSpec(kind="slurm-rest", **slurmrestd)})
    client = await aiohttp_client(create_app(config))
    body = await (await client.get("/api/health")).json()
    assert body["ready"] == "ready", body
    assert {c["group"] for c in body["checks"]} == {"storage", "slurm"}
