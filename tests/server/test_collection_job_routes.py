"""The served collection's SAM jobs on the real app (in-process client): fine-tune on the
collection's own annotations as a job (a worker process on the local engine, a few CPU steps
through micro-sam's trainer), offer the checkpoint as a model and prompt an item with it;
cancel a running fine-tuning; fill the embedding cache for an item; refuse bad input with a
4xx. Quality is never asserted (random weights)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import tifffile
from scipy import ndimage

from ilastik_web.collections import Collection, ItemAnnotation
from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.layers import StaticLayer

torch = pytest.importorskip("torch")
pytest.importorskip("micro_sam.training")
_SAM_TESTS = str(Path(__file__).resolve().parents[1] / "sam")
if _SAM_TESTS not in sys.path:
    sys.path.insert(0, _SAM_TESTS)
from sam_fixtures import blobs, build_tiny_sam  # noqa: E402

OPERATOR = {"Authorization": "Bearer operator"}
SHAPE = (48, 64)
TINY_TRAINING = {"iterations": 2, "patch": 32, "n_objects_per_batch": 2, "n_sub_iteration": 2}


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for n, name in enumerate(("first", "second")):
        tifffile.imwrite(folder / f"{name}.tif", blobs((1, *SHAPE), seed=n)[0])
    return folder


def _annotate(images: Path) -> None:
    """Both items annotated by thresholding, as an annotator would leave them."""
    collection = Collection.from_folder(images)
    for n, name in enumerate(("first", "second")):
        labels = ndimage.label(blobs((1, *SHAPE), seed=n)[0] > 100)[0].astype(np.uint32)
        ids = [int(v) for v in np.unique(labels) if v]
        collection.save(name, ItemAnnotation(labels, {v: "cell" for v in ids},
                                             {v: "polygon" for v in ids}))


@pytest_asyncio.fixture
async def world(aiohttp_client, tmp_path, images, blob_source):
    checkpoint = tmp_path / "tiny.pt"
    torch.save(build_tiny_sam().state_dict(), checkpoint)
    resources = Resources(128 << 20, threads=2)
    raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
    project = Project.create(tmp_path / "p", raw.volume("v0"), classes=["a", "b"])
    app = create_app(ServerConfig(token="operator", sam_models=(f"tiny=vit_b:{checkpoint}",),
                                  sam_device="cpu", sam_cache_dir=tmp_path / "embeddings"),
                     layers=[raw], projects=[("p", project, "raw")], resources=resources,
                     collection=Collection.from_folder(images))
    client = await aiohttp_client(app)
    accounts = app[CONTEXT_KEY].access.accounts
    annotator = {"Authorization": f"Bearer {accounts.create_link('p', 'annotator')[1]}"}
    return client, annotator, app[CONTEXT_KEY]


async def _json(response, status=200):
    assert response.status == status, await response.text()
    return await response.json()


async def _until(client, job_id: str, done=lambda job: job["state"] not in ("PENDING",
                                                                             "RUNNING")):
    for _ in range(3000):  # generous: the cores are busy
        job = await _json(await client.get(f"/api/collection/jobs/{job_id}", headers=OPERATOR))
        if done(job):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id}: {job}")


def ctx_models(answer: dict) -> set[str]:
    return {m["name"] for m in answer["models"]}


async def _logs(client, job_id: str) -> str:
    return await (await client.get(f"/api/collection/jobs/{job_id}/logs",
                                   headers=OPERATOR)).text()


async def test_bad_requests_are_4xx(world, images):
    client, annotator, _ = world
    url = "/api/collection/jobs/sam-finetune"
    nothing = await client.post(url, headers=OPERATOR, json={"name": "r2"})
    assert nothing.status == 400 and "annotated" in (await nothing.json())["error"]
    _annotate(images)
    for body, words in [
            ({"name": "bad name"}, "name"), ([1, 2], "expected"),
            ({"name": "r2", "engine": "nowhere"}, "engine"),
            ({"name": "r2", "settings": {"iterations": 0}}, "iterations"),
            ({"name": "r2", "settings": {"steps": 2}}, "settings"),
            ({"name": "r2", "training_set": "../../etc"}, "training set"),
            ({"name": "r2", "training_set": "missing"}, "no training set"),
            ({"name": "r2", "val_fraction": 1.5}, "val_fraction"),
            ({"name": "r2", "model": "nowhere"}, "nowhere"),
            ({"name": "tiny"}, "already")]:
        response = await client.post(url, headers=OPERATOR, json=body)
        assert response.status in (400, 404), (body, await response.text())
        assert words in (await response.json())["error"], body
    assert not (images / "annotations" / "jobs").exists()  # nothing was started
    assert not (images / "annotations" / "training-sets").exists()
    refused = await client.post(url, headers=annotator, json={"name": "r2"})
    assert refused.status == 403
    assert (await client.get("/api/collection/jobs", headers=annotator)).status == 403
    assert (await client.get("/api/collection/jobs/nope", headers=OPERATOR)).status == 404
    embed = await client.post("/api/collection/jobs/sam-embeddings", headers=OPERATOR,
                              json={"items": ["nope"]})
    assert embed.status == 404
    embed = await client.post("/api/collection/jobs/sam-embeddings", headers=OPERATOR,
                              json={"slices": [5]})
    assert embed.status == 400 and "outside" in (await embed.json())["error"]


async def test_finetune_on_the_annotations_then_prompt_with_the_model(world, images):
    client, _, _ = world
    _annotate(images)
    response = await client.post("/api/collection/jobs/sam-finetune", headers=OPERATOR,
                                 json={"name": "round2", "engine": "local",
                                       "val_fraction": 0.5, "settings": TINY_TRAINING})
    job = await _json(response, 201)
    assert job["kind"] == "sam-finetune" and job["engine"] == "local"
    # The job folder and the training set it exported live beside the annotations.
    assert (images / "annotations" / "jobs" / job["id"]).is_dir()
    (training_set,) = (images / "annotations" / "training-sets").iterdir()
    assert job["source"] == str(training_set.resolve())
    assert (training_set / "manifest.json").is_file()
    assert {p.name for p in (training_set / "train" / "images").iterdir()} | {
        p.name for p in (training_set / "val" / "images").iterdir()} == {"first.tif",
                                                                         "second.tif"}
    done = await _until(client, job["id"])
    assert done["state"] == "DONE", await _logs(client, job["id"])
    assert done["progress"]["step"] == 2 and "2 steps done" in done["progress"]["message"]
    checkpoint = Path(done["result"]["checkpoint"])
    assert checkpoint == (images / "annotations" / "models" / "round2.pt").resolve()
    listed = await _json(await client.get("/api/collection/jobs", headers=OPERATOR))
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    assert "fine-tuning tiny for 2 steps" in await _logs(client, job["id"])

    loaded = await _json(await client.post(f"/api/collection/jobs/{job['id']}/sam-model",
                                           headers=OPERATOR), 201)
    assert loaded["model"] == "round2" and "round2" in ctx_models(loaded)
    models = await _json(await client.get("/api/sam/models", headers=OPERATOR))
    assert {m["name"] for m in models["models"]} == {"tiny", "round2"}
    view = await _json(await client.get("/api/collection/items/first", headers=OPERATOR))
    mask = await _json(await client.post("/api/sam/prompt", headers=OPERATOR, json={
        "layer_id": view["image"]["layer_id"], "version": view["image"]["version"],
        "plane": "xy", "points_xyz": [[20.5, 20.5, 0.5]], "point_labels": [1],
        "model": "round2"}))
    assert mask["model"] == "round2"
    # A second fine-tuning may not overwrite the first's checkpoint.
    again = await client.post("/api/collection/jobs/sam-finetune", headers=OPERATOR,
                              json={"name": "round2"})
    assert again.status == 400


async def test_cancel_a_running_finetuning(world, images):
    client, _, _ = world
    _annotate(images)
    job = await _json(await client.post(
        "/api/collection/jobs/sam-finetune", headers=OPERATOR,
        json={"name": "long", "settings": {**TINY_TRAINING, "iterations": 100_000}}), 201)
    await _until(client, job["id"], lambda j: j["state"] != "PENDING"
                 and (j.get("progress") or {}).get("step", 0) >= 1)
    await _json(await client.post(f"/api/collection/jobs/{job['id']}/cancel",
                                  headers=OPERATOR))
    ended = await _until(client, job["id"])
    assert ended["state"] == "CANCELLED", await _logs(client, job["id"])
    assert not (images / "annotations" / "models" / "long.pt").exists()
    not_done = await client.post(f"/api/collection/jobs/{job['id']}/sam-model",
                                 headers=OPERATOR)
    assert not_done.status == 400


async def test_embed_an_item_then_its_prompts_compute_nothing(world):
    client, _, _ = world
    job = await _json(await client.post("/api/collection/jobs/sam-embeddings",
                                        headers=OPERATOR, json={"items": ["second"]}), 201)
    assert job["kind"] == "sam-embeddings"
    done = await _until(client, job["id"])
    assert done["state"] == "DONE", await _logs(client, job["id"])
    view = await _json(await client.get("/api/collection/items/second", headers=OPERATOR))
    before = (await _json(await client.get("/api/sam/status", headers=OPERATOR)))["embeddings"]
    await _json(await client.post("/api/sam/prompt", headers=OPERATOR, json={
        "layer_id": view["image"]["layer_id"], "version": view["image"]["version"],
        "plane": "xy", "points_xyz": [[20.5, 20.5, 0.5]], "point_labels": [1]}))
    after = (await _json(await client.get("/api/sam/status", headers=OPERATOR)))["embeddings"]
    assert after["computed"] == before["computed"]
    assert after["disk_hits"] == before["disk_hits"] + 1


async def test_without_a_collection_the_routes_answer_404(aiohttp_client):
    client = await aiohttp_client(create_app(ServerConfig(token="operator")))
    for method, path in [("GET", "/api/collection/jobs"),
                         ("POST", "/api/collection/jobs/sam-finetune"),
                         ("POST", "/api/collection/jobs/sam-embeddings"),
                         ("GET", "/api/collection/jobs/x")]:
        response = await client.request(method, path, headers=OPERATOR, json={"name": "a"})
        assert response.status == 404, (path, await response.text())
