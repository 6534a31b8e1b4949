"""SAM jobs on a real one-node Slurm cluster (the ``slurm_cluster`` fixture, sbatch):
fine-tuning a tiny model for a few CPU steps through micro-sam's trainer, and embeddings
in bulk into the cache a SAM service then reads. No quality is asserted."""

import sys
from pathlib import Path

import pytest
import zarr

from hpc.job import DONE, RUNNING
from hpc.sam_jobs import (
    EmbeddingCache,
    EmbeddingTarget,
    finetuned_model,
    submit_embeddings,
    submit_finetune,
)
from hpc.service import JobService
from ilastik_web.sam import ModelSpec, SamService, SamSettings, load_model
from ilastik_web.sam.finetune import FinetuneSettings
from ilastik_web.sources import open_source

pytestmark = pytest.mark.slurm
pytest.importorskip("micro_sam.training")
torch = pytest.importorskip("torch")
sys.path.append(str(Path(__file__).resolve().parents[1] / "sam"))
from conftest import slurm_engine  # noqa: E402
from sam_fixtures import blobs, build_tiny_sam, write_training_set  # noqa: E402

DEADLINE_S = 900


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(build_tiny_sam().state_dict(), path)
    return ModelSpec("tiny", "vit_b", path)


def test_finetune_job_on_slurm(slurm_cluster, tiny, tmp_path):
    jobs = JobService(tmp_path / "jobs")
    engine = slurm_engine("slurm", None, time="00:20:00", mem="3G", cpus=1)
    settings = FinetuneSettings(iterations=2, patch_shape=(48, 48), n_objects_per_batch=2,
                                n_sub_iteration=2)
    job = submit_finetune(jobs, tiny, write_training_set(tmp_path), tmp_path / "tuned.pt",
                          settings, name="tuned", engine=engine)
    assert job.state == RUNNING and job.record()["handles"]["slurm"]
    summary = jobs.wait(job.id, timeout=DEADLINE_S)
    assert summary["state"] == DONE, job.logs()
    assert summary["engine"] == "slurm" and summary["progress"]["step"] == 2
    spec = finetuned_model(job)
    tuned = load_model(spec, "cpu")
    before = build_tiny_sam().state_dict()
    assert any(not torch.equal(before[k], v) for k, v in tuned.sam.state_dict().items())


def test_embedding_job_on_slurm_fills_the_server_cache(slurm_cluster, tiny, tmp_path):
    data = blobs((6, 40, 50))[0]
    array = zarr.create_array(store=str(tmp_path / "v.zarr"), shape=data.shape,
                              chunks=(1, 40, 50), dtype=data.dtype, zarr_format=2)
    array[...] = data
    service = SamService(SamSettings(models=(tiny,), device="cpu",
                                     embedding_dir=tmp_path / "embeddings"))
    try:
        jobs = JobService(tmp_path / "jobs")
        engine = slurm_engine("slurm", None, time="00:20:00", mem="3G", cpus=1, workers=2)
        job = submit_embeddings(jobs, tiny, [EmbeddingTarget(str(tmp_path / "v.zarr"))],
                                EmbeddingCache.of_store(service.embeddings),
                                slices_per_block=3, engine=engine)
        summary = jobs.wait(job.id, timeout=DEADLINE_S)
        assert summary["state"] == DONE, job.logs()
        assert summary["blocks_done"] == 2
        volume = open_source(str(tmp_path / "v.zarr")).base
        for z in range(6):
            service.prompt(volume, "layer:v", "xy", z, points_xyz=[[20.5, 20.5, z + 0.5]],
                           point_labels=[1])
        assert (service.embeddings.stats.computed, service.embeddings.stats.disk_hits) == (0, 6)
    finally:
        service.close()
