"""The SAM HTTP routes on a small app: prompt, preview, accept, propagate, 429 and 503."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from ilastik_web.cache import ArrayCache
from ilastik_web.project import Project
from ilastik_web.sam import ModelSpec
from ilastik_web.server.errors import error_middleware
from ilastik_web.server.layers import LayerRegistry, StaticLayer
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routes_sam import sam_routes
from ilastik_web.server.routing import RouteTable


@pytest.fixture
def sam_app(make_service, volume, tmp_path):
    def factory(**settings):
        service = make_service(**settings)
        registry = LayerRegistry()
        registry.add(StaticLayer("raw", volume))
        hub = ProjectHub(registry, ArrayCache(16 << 20))
        project = Project(None, volume)
        project.add_class("cell")
        hub.add("p1", project, source_layer_id="raw")
        table = RouteTable(sam_routes(service, registry, hub, instances_dir=tmp_path / "obj",
                                      allowed_roots=[tmp_path]))
        app = web.Application(middlewares=[error_middleware])
        table.register(app)
        app.on_cleanup.append(lambda app: asyncio.to_thread(hub.close))
        return app, service, registry, project

    return factory


async def test_prompt_preview_accept_into_labels(aiohttp_client, sam_app):
    app, service, _, project = sam_app()
    client = await aiohttp_client(app)
    resp = await client.post("/api/sam/prompt", json={
        "project_id": "p1", "plane": "yz", "points_xyz": [[25.5, 20.5, 3.5]],
        "point_labels": [1]})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["plane"] == "yz" and body["slices"][0]["index"] == 25
    assert body["box_xyz"][0][0] == 25 and body["box_xyz"][1][0] == 26
    again = await (await client.get(f"/api/sam/masks/{body['mask_id']}")).json()
    assert again == body
    resp = await client.post(f"/api/sam/masks/{body['mask_id']}/accept",
                             json={"target": "labels", "label": 1})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["revision"] == project.labels.revision == 1
    assert (await client.get(f"/api/sam/masks/{body['mask_id']}")).status == 404


async def test_accept_into_instances_serves_a_layer(aiohttp_client, sam_app):
    app, service, registry, _ = sam_app()
    client = await aiohttp_client(app)
    body = await (await client.post("/api/sam/prompt", json={
        "layer_id": "raw", "plane": "xy", "box_xyz": [[10, 10, 2], [30, 30, 3]]})).json()
    service.masks.get(body["mask_id"]).mask[0, :2, :2] = True  # never empty
    resp = await client.post(f"/api/sam/masks/{body['mask_id']}/accept",
                             json={"target": "instances"})
    assert resp.status == 200, await resp.text()
    accepted = await resp.json()
    assert accepted["object_id"] == 1 and accepted["layer_id"] in registry
    layer = registry.get(accepted["layer_id"])
    assert layer.kind == "segmentation" and layer.version == accepted["version"]
    resp = await client.delete(f"/api/sam/objects/{accepted['layer_id']}/1")
    assert resp.status == 200 and (await resp.json())["version"] != accepted["version"]


async def test_reject_and_propagate_task(aiohttp_client, sam_app):
    app, service, _, _ = sam_app()
    client = await aiohttp_client(app)
    body = await (await client.post("/api/sam/prompt", json={
        "layer_id": "raw", "plane": "xy", "box_xyz": [[15, 10, 3], [40, 35, 4]]})).json()
    service.masks.get(body["mask_id"]).mask[0, 2:6, 2:6] = True
    resp = await client.post(f"/api/sam/masks/{body['mask_id']}/propagate",
                             json={"lower": 2, "upper": 4, "iou_threshold": 0.0})
    assert resp.status == 202, await resp.text()
    task = await resp.json()
    for _ in range(300):
        task = await (await client.get(f"/api/sam/tasks/{task['id']}")).json()
        if task["state"] in ("done", "failed", "cancelled"):
            break
        await asyncio.sleep(0.05)
    assert task["state"] == "done", task
    preview = await (await client.get(f"/api/sam/masks/{task['result']['mask_id']}")).json()
    assert preview["kind"] == "propagated"
    assert [s["index"] for s in preview["slices"]] == task["result"]["slices"]
    assert (await client.delete(f"/api/sam/masks/{preview['mask_id']}")).status == 200
    assert (await client.get(f"/api/sam/masks/{preview['mask_id']}")).status == 404


async def test_precompute_and_status(aiohttp_client, sam_app):
    app, service, _, _ = sam_app()
    client = await aiohttp_client(app)
    resp = await client.post("/api/sam/embeddings",
                             json={"layer_id": "raw", "plane": "xz", "start": 0, "stop": 3})
    assert resp.status == 202
    task = service.tasks.get((await resp.json())["id"])
    assert task.wait(60) and task.state == "done"
    status = await (await client.get("/api/sam/status")).json()
    assert status["embeddings"]["computed"] == 3
    models = await (await client.get("/api/sam/models")).json()
    assert models["models"][0]["loaded"] is True


@pytest.mark.parametrize("body, status", [
    ({"layer_id": "raw", "plane": "xy"}, 400),                                # no prompt
    ({"layer_id": "raw", "plane": "zz", "points_xyz": [[1, 1, 1]]}, 400),
    ({"layer_id": "raw", "plane": "xy", "points_xyz": [[1, 1, 99]]}, 400),    # slice outside
    ({"layer_id": "raw", "plane": "xy", "points_xyz": [["a", 1, 1]]}, 400),
    ({"plane": "xy", "points_xyz": [[1, 1, 1]]}, 400),                        # no data
    ({"layer_id": "nope", "plane": "xy", "points_xyz": [[1, 1, 1]]}, 404),
    ({"layer_id": "raw", "plane": "xy", "points_xyz": [[1, 1, 1]], "model": "x"}, 404),
    ({"layer_id": "raw", "plane": "xy", "points_xyz": [[1, 1, 1]],
      "previous_mask_id": "gone"}, 404),
])
async def test_bad_prompts(aiohttp_client, sam_app, body, status):
    app, *_ = sam_app()
    client = await aiohttp_client(app)
    resp = await client.post("/api/sam/prompt", json=body)
    assert resp.status == status
    assert "error" in await resp.json()


async def test_missing_checkpoint_answers_503(aiohttp_client, sam_app, tmp_path):
    app, *_ = sam_app(models=(ModelSpec("lm", "vit_b_lm", tmp_path / "absent.pt"),))
    client = await aiohttp_client(app)
    resp = await client.post("/api/sam/prompt", json={
        "layer_id": "raw", "plane": "xy", "points_xyz": [[1, 1, 1]]})
    assert resp.status == 503
    assert "absent.pt" in (await resp.json())["error"]
    assert "Retry-After" in resp.headers


async def test_full_prompt_queue_answers_429(aiohttp_client, sam_app):
    app, service, _, _ = sam_app(max_active_prompts=1)
    client = await aiohttp_client(app)
    with service.admit_prompt():  # another user's prompt in progress
        resp = await client.post("/api/sam/prompt", json={
            "layer_id": "raw", "plane": "xy", "points_xyz": [[1, 1, 1]]})
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert "error" in await resp.json()
    resp = await client.post("/api/sam/prompt", json={
        "layer_id": "raw", "plane": "xy", "points_xyz": [[1, 1, 1]]})
    assert resp.status == 200


async def test_a_slow_prompt_does_not_block_other_requests(aiohttp_client, sam_app):
    app, service, _, _ = sam_app(prompt_workers=1)
    client = await aiohttp_client(app)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Occupy the only prompt thread, as a slow embedding would.
    blocked = loop.run_in_executor(service.prompt_executor,
                                   lambda: asyncio.run_coroutine_threadsafe(
                                       release.wait(), loop).result(10))
    resp = await client.get("/api/sam/status")  # answered while the prompt thread is busy
    assert resp.status == 200
    release.set()
    await blocked


async def test_segment_everything_fills_the_instance_layer(aiohttp_client, sam_app):
    pytest.importorskip("micro_sam")
    app, service, registry, _ = sam_app()
    client = await aiohttp_client(app)
    resp = await client.post("/api/sam/automatic", json={
        "layer_id": "raw", "plane": "xy", "index": 2,
        "region_xyz": [[5, 4, 2], [45.5, 30, 3]],
        "params": {"method": "amg", "points_per_side": 6, "pred_iou_thresh": 0,
                   "stability_score_thresh": 0}})
    assert resp.status == 202, await resp.text()
    queued = await resp.json()
    task = service.tasks.get(queued["id"])
    assert task.wait(300) and task.state == "done", task.to_json()
    polled = await (await client.get(f"/api/sam/tasks/{queued['id']}")).json()
    assert polled["result"]["method"] == "amg" and polled["result"]["objects"] >= 1
    layer = registry.get(queued["layer_id"])
    assert layer.store.object_ids == polled["result"]["object_ids"]
    box = layer.store.bounding_box(polled["result"]["object_ids"][0])
    assert box.start[0] == 2 and box.stop[0] == 3
    assert box.start[1] >= 4 and box.stop[1] <= 30 and box.start[2] >= 5 and box.stop[2] <= 46


@pytest.mark.parametrize("body, status", [
    ({"layer_id": "raw", "index": 99}, 400),
    ({"layer_id": "raw", "index": 1, "params": {"method": "nope"}}, 400),
    ({"layer_id": "raw", "index": 1, "params": {"method": "ais"}}, 202),  # fails in the task
    ({"layer_id": "raw", "index": 1, "region_xyz": [[60, 60, 1], [70, 70, 2]]}, 400),
    ({"layer_id": "nope", "index": 1}, 404),
])
async def test_segment_everything_refuses_bad_requests(aiohttp_client, sam_app, body, status):
    pytest.importorskip("micro_sam")
    app, service, _, _ = sam_app()
    client = await aiohttp_client(app)
    resp = await client.post("/api/sam/automatic", json=body)
    assert resp.status == status, await resp.text()
    if status == 202:
        task = service.tasks.get((await resp.json())["id"])
        assert task.wait(120) and task.state == "failed"
        assert "no instance decoder" in task.error


async def test_finetune_route_checks_paths_and_runs(aiohttp_client, sam_app, tmp_path):
    pytest.importorskip("micro_sam.training")
    import numpy as np
    import tifffile
    from sam_fixtures import blobs
    from scipy import ndimage

    for split in ("train", "val"):
        image = blobs((1, 56, 60), seed=len(split))[0, 0]
        for kind, data in (("images", image), ("labels", ndimage.label(image > 100)[0])):
            (tmp_path / "set" / split / kind).mkdir(parents=True)
            tifffile.imwrite(tmp_path / "set" / split / kind / "a.tif", data.astype(np.uint16))
    app, service, _, _ = sam_app()
    client = await aiohttp_client(app)
    good = {"training_set": str(tmp_path / "set"), "output": str(tmp_path / "r1.pt"),
            "name": "r1", "settings": {"iterations": 2, "patch": 48,
                                       "n_objects_per_batch": 2, "n_sub_iteration": 2}}
    outside = await client.post("/api/sam/finetune", json={**good, "output": "/etc/x.pt"})
    assert outside.status == 403
    bad = await client.post("/api/sam/finetune", json={**good, "settings": {"colour": 1}})
    assert bad.status == 400
    resp = await client.post("/api/sam/finetune", json=good)
    assert resp.status == 202, await resp.text()
    task = service.tasks.get((await resp.json())["id"])
    assert task.wait(600) and task.state == "done", task.to_json()
    models = await (await client.get("/api/sam/models")).json()
    assert "r1" in [m["name"] for m in models["models"]]
    resp = await client.post("/api/sam/prompt", json={
        "layer_id": "raw", "plane": "xy", "points_xyz": [[20.5, 20.5, 2.5]], "model": "r1"})
    assert resp.status == 200, await resp.text()
