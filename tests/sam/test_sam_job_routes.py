"""The SAM job routes on a small app, as the server wires them: fine-tune as a job of the
project (a worker process on the local engine), offer its checkpoint as a model, prompt
with it; fill the embedding cache in bulk, then prompt without computing an embedding."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import zarr
from aiohttp import web
from sam_fixtures import blobs, write_training_set

from ilastik_web.cache import ArrayCache
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.errors import error_middleware
from ilastik_web.server.layers import LayerRegistry, StaticLayer
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routes_jobs import job_routes
from ilastik_web.server.routes_sam import sam_routes
from ilastik_web.server.routing import RouteTable

pytest.importorskip("micro_sam.training")


@pytest.fixture
def sam_jobs_app(make_service, tmp_path):
    data = blobs((6, 40, 50))[0]
    array = zarr.create_array(store=str(tmp_path / "raw.zarr"), shape=data.shape,
                              chunks=(1, 40, 50), dtype=data.dtype, zarr_format=2)
    array[...] = data
    project = Project.create(tmp_path / "project", str(tmp_path / "raw.zarr"),
                             classes=["background", "cell"])
    service = make_service(embedding_dir=tmp_path / "embeddings")
    registry = LayerRegistry()
    hub = ProjectHub(registry, ArrayCache(16 << 20))
    registry.add(StaticLayer("raw", project.source))
    hub.add("p", project, source_layer_id="raw")
    resources = Resources(16 << 20, threads=1)
    executor = ThreadPoolExecutor(2)
    routes = job_routes(hub, executor, allowed_roots=[tmp_path], resources=resources,
                        sam=service)
    routes += sam_routes(service, registry, hub, allowed_roots=[tmp_path])
    app = web.Application(middlewares=[error_middleware])
    RouteTable(routes).register(app)
    app.on_cleanup.append(lambda app: asyncio.to_thread(hub.close))
    app.on_cleanup.append(lambda app: asyncio.to_thread(resources.close))
    return app, service


async def _until_done(client, job_id: str) -> dict:
    for _ in range(3000):
        status = await (await client.get(f"/api/projects/p/jobs/{job_id}")).json()
        if status["state"] not in ("PENDING", "RUNNING"):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} still running: {status}")


async def test_finetune_job_then_prompt_with_its_model(aiohttp_client, sam_jobs_app,
                                                       tmp_path):
    app, service = sam_jobs_app
    client = await aiohttp_client(app)
    training_set = write_training_set(tmp_path)
    bad = await client.post("/api/projects/p/jobs/sam-finetune",
                            json={"training_set": "/etc", "name": "r2"})
    assert bad.status == 403
    bad = await client.post("/api/projects/p/jobs/sam-finetune",
                            json={"training_set": str(training_set), "name": "bad name"})
    assert bad.status == 400
    bad = await client.post("/api/projects/p/jobs/sam-finetune", json={
        "training_set": str(training_set), "name": "r2", "engine": "nowhere"})
    assert bad.status == 400 and "engine" in (await bad.json())["error"]
    response = await client.post("/api/projects/p/jobs/sam-finetune", json={
        "training_set": str(training_set), "name": "round2", "engine": "local",
        "settings": {"iterations": 3, "patch": 48, "n_objects_per_batch": 2,
                     "n_sub_iteration": 2}})
    assert response.status == 201, await response.text()
    job = await response.json()
    assert job["kind"] == "sam-finetune"
    early = await client.post(f"/api/projects/p/jobs/{job['id']}/sam-model")
    status = await _until_done(client, job["id"])
    assert status["state"] == "DONE", await (
        await client.get(f"/api/projects/p/jobs/{job['id']}/logs")).text()
    assert status["progress"]["step"] == 3 and status["result"]["checkpoint"].endswith(
        "models/round2.pt")
    if early.status != 201:  # asked before it finished
        assert early.status == 400 and "not done" in (await early.json())["error"]
    listed = await (await client.get("/api/projects/p/jobs")).json()
    assert [j["kind"] for j in listed["jobs"]] == ["sam-finetune"]

    loaded = await client.post(f"/api/projects/p/jobs/{job['id']}/sam-model")
    assert loaded.status == 201, await loaded.text()
    assert (await loaded.json())["model"] == "round2"
    assert "round2" in service.models.names
    again = await client.post(f"/api/projects/p/jobs/{job['id']}/sam-model")
    assert again.status == 201  # the same checkpoint again: nothing changes
    prompt = await client.post("/api/sam/prompt", json={
        "project_id": "p", "plane": "xy", "points_xyz": [[20.5, 20.5, 2.5]],
        "point_labels": [1], "model": "round2"})
    assert prompt.status == 200, await prompt.text()
    assert (await prompt.json())["model"] == "round2"


async def test_embedding_job_then_prompts_compute_nothing(aiohttp_client, sam_jobs_app):
    app, service = sam_jobs_app
    client = await aiohttp_client(app)
    bad = await client.post("/api/projects/p/jobs/sam-embeddings", json={"slices": [99]})
    assert bad.status == 400 and "outside" in (await bad.json())["error"]
    response = await client.post("/api/projects/p/jobs/sam-embeddings",
                                 json={"slices": [1, 4], "engine": "local"})
    assert response.status == 201, await response.text()
    job = await response.json()
    status = await _until_done(client, job["id"])
    assert status["state"] == "DONE", await (
        await client.get(f"/api/projects/p/jobs/{job['id']}/logs")).text()
    for z in (1, 4):
        prompt = await client.post("/api/sam/prompt", json={
            "project_id": "p", "plane": "xy", "points_xyz": [[20.5, 20.5, z + 0.5]],
            "point_labels": [1]})
        assert prompt.status == 200, await prompt.text()
    figures = (await (await client.get("/api/sam/status")).json())["embeddings"]
    assert (figures["computed"], figures["disk_hits"]) == (0, 2)
    not_a_model = await client.post(f"/api/projects/p/jobs/{job['id']}/sam-model")
    assert not_a_model.status == 400
