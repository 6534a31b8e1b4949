"""SAM work as batch jobs: fine-tuning (micro-sam's trainer, a tiny model, a few CPU steps)
and embeddings in bulk, on the local engines; Slurm runs are in tests/hpc/test_slurm_sam.py.
No quality is asserted (random weights)."""

from __future__ import annotations

import time

import pytest
import zarr
from sam_fixtures import blobs, write_training_set

from hpc.job import CANCELLED, DONE, TERMINAL, EngineSpec
from hpc.local_process import ProcessLauncher
from hpc.sam_jobs import (
    EmbeddingCache,
    EmbeddingTarget,
    finetuned_model,
    submit_embeddings,
    submit_finetune,
)
from hpc.service import JobService
from ilastik_web.errors import ConflictError, InvalidRequestError
from ilastik_web.sam import ModelSpec
from ilastik_web.sam.finetune import FinetuneSettings
from ilastik_web.sources import open_source

pytest.importorskip("micro_sam.training")

TINY_STEPS = FinetuneSettings(iterations=3, patch_shape=(48, 48), n_objects_per_batch=2,
                              n_sub_iteration=2)


def wait_for(condition, what: str, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def training_set(tmp_path):
    return write_training_set(tmp_path)


@pytest.fixture
def tiny(tiny_checkpoint):
    return ModelSpec("tiny", "vit_b", tiny_checkpoint)


def test_finetune_job_on_the_local_engine_offers_a_model(training_set, tmp_path, tiny,
                                                        make_service):
    jobs = JobService(tmp_path / "jobs")
    output = tmp_path / "models" / "round2.pt"
    job = submit_finetune(jobs, tiny, training_set, output, TINY_STEPS, name="round2",
                          engine=EngineSpec(kind="local"), background=False)
    summary = jobs.get(job.id)
    assert summary["state"] == DONE, jobs.logs(job.id)
    assert summary["kind"] == "sam-finetune"
    assert summary["blocks_done"] == summary["blocks_total"] == 1
    progress = summary["progress"]
    assert progress["step"] == progress["steps"] == 3
    assert isinstance(progress["loss"], float) and progress["device"] == "cpu"
    assert summary["result"]["checkpoint"] == str(output.resolve()) and output.is_file()
    assert summary["result"]["iterations"] == 3

    spec = finetuned_model(job)
    assert (spec.name, spec.model_type, spec.checkpoint) == ("round2", "vit_b",
                                                              output.resolve())
    service = make_service()
    service.models.add(spec)
    volume = open_source(_zarr(tmp_path / "v.zarr", blobs((5, 40, 50))[0])).base
    mask = service.prompt(volume, "layer:x", "xy", 1, points_xyz=[[20.5, 20.5, 1.5]],
                          point_labels=[1], model="round2")
    assert mask.model_name == "round2"

    with pytest.raises(ConflictError, match="exists"):
        submit_finetune(jobs, tiny, training_set, output, TINY_STEPS, name="round3")
    with pytest.raises(InvalidRequestError, match="training set"):
        submit_finetune(jobs, tiny, tmp_path, tmp_path / "x.pt", TINY_STEPS, name="x")


def test_finetune_job_reports_steps_and_cancels(training_set, tmp_path, tiny):
    launcher = ProcessLauncher(threads=1, nice=0)
    jobs = JobService(tmp_path / "jobs", launcher=launcher)
    try:
        many = FinetuneSettings(iterations=100_000, patch_shape=(48, 48),
                                n_objects_per_batch=2, n_sub_iteration=2)
        job = submit_finetune(jobs, tiny, training_set, tmp_path / "never.pt", many,
                              name="never")
        progress = wait_for(lambda: (jobs.get(job.id)["progress"] or {}).get("step"),
                            "a first step")
        assert progress >= 1
        running = jobs.get(job.id)
        assert running["state"] == "RUNNING" and running["progress"]["steps"] == 100_000
        assert "loss" in running["progress"]["message"]
        jobs.cancel(job.id)
        final = wait_for(lambda: (s := jobs.get(job.id))["state"] in TERMINAL and s,
                         "the cancelled state")
        assert final["state"] == CANCELLED, jobs.logs(job.id)
        assert not (tmp_path / "never.pt").exists()
        with pytest.raises(InvalidRequestError, match="not done"):
            finetuned_model(job)
    finally:
        launcher.close()


def _zarr(path, data):
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=(1, *data.shape[1:]),
                              dtype=data.dtype, zarr_format=2)
    array[...] = data
    return str(path)


def test_embedding_job_fills_the_cache_the_server_reads(tmp_path, make_service):
    location = _zarr(tmp_path / "vol.zarr", blobs((5, 40, 50))[0])
    cache_dir = tmp_path / "embeddings"
    server = make_service(embedding_dir=cache_dir)
    jobs = JobService(tmp_path / "jobs")
    model = server.models.spec(None)
    job = submit_embeddings(jobs, model, [EmbeddingTarget(location)],
                            EmbeddingCache.of_store(server.embeddings), slices_per_block=2,
                            engine=EngineSpec(kind="local"), background=False)
    summary = jobs.get(job.id)
    assert summary["state"] == DONE, jobs.logs(job.id)
    assert summary["kind"] == "sam-embeddings"
    assert (summary["blocks_done"], summary["blocks_total"]) == (3, 3)
    assert len(server.embeddings.disk_usage()) == 5
    assert server.embeddings.stats.computed == 0

    volume = open_source(location).base
    for z in (0, 4):
        server.prompt(volume, "layer:vol", "xy", z, points_xyz=[[20.5, 20.5, z + 0.5]],
                      point_labels=[1])
    stats = server.embeddings.stats
    assert (stats.computed, stats.disk_hits) == (0, 2)


def test_embedding_job_of_chosen_slices_keeps_the_size_limit(tmp_path, make_service):
    first = _zarr(tmp_path / "a.zarr", blobs((5, 40, 50), seed=1)[0])
    second = _zarr(tmp_path / "b.zarr", blobs((5, 40, 50), seed=2)[0])
    probe = make_service(embedding_dir=tmp_path / "probe")
    probe.prompt(open_source(first).base, "layer:a", "xy", 0,
                 points_xyz=[[20.5, 20.5, 0.5]], point_labels=[1])
    entry = probe.embeddings.disk_usage()[0][1]
    limit = 2 * entry + entry // 2  # room for two entries
    server = make_service(embedding_dir=tmp_path / "embeddings", embedding_disk_bytes=limit)
    jobs = JobService(tmp_path / "jobs")
    job = submit_embeddings(jobs, server.models.spec(None),
                            [EmbeddingTarget(first, [1, 2]), EmbeddingTarget(second, [3])],
                            EmbeddingCache.of_store(server.embeddings), slices_per_block=1,
                            engine=EngineSpec(kind="local"), background=False)
    assert jobs.get(job.id)["state"] == DONE, jobs.logs(job.id)
    usage = server.embeddings.disk_usage()
    assert len(usage) == 2 and sum(size for _, size, _ in usage) <= limit
    # the most recently written ones stay: slice 3 of the second volume is served as is
    server.prompt(open_source(second).base, "layer:b", "xy", 3,
                  points_xyz=[[20.5, 20.5, 3.5]], point_labels=[1])
    assert (server.embeddings.stats.computed, server.embeddings.stats.disk_hits) == (0, 1)

    with pytest.raises(InvalidRequestError, match="outside"):
        submit_embeddings(jobs, server.models.spec(None), [EmbeddingTarget(first, [9])],
                          EmbeddingCache.of_store(server.embeddings))
    with pytest.raises(InvalidRequestError, match="memory only"):
        EmbeddingCache.of_store(make_service().embeddings)


def test_cli_finetune_as_a_job(training_set, tmp_path, tiny_checkpoint, capsys):
    import json

    from ilastik_web.cli import main

    output = tmp_path / "cli.pt"
    code = main(["sam-finetune", str(training_set), "--sam-model",
                 f"vit_b:{tiny_checkpoint}", "--output", str(output), "--iterations", "2",
                 "--patch", "48", "--objects", "2", "--engine", "local",
                 "--jobs", str(tmp_path / "jobs")])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["checkpoint"] == str(output.resolve()) and output.is_file()
    assert result["iterations"] == 2
    summary = JobService(tmp_path / "jobs").get(result["job"])
    assert summary["state"] == DONE and summary["kind"] == "sam-finetune"
