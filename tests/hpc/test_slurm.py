"""The Slurm engines against a real one-node cluster started by the ``slurm_cluster``
fixture: ``slurm`` through sbatch/squeue/scancel, ``slurm-rest`` through a real slurmrestd
with JWT authentication (the ``slurmrestd`` fixture)."""

import numpy as np
import pytest
from conftest import (
    corrupt_copy,
    hold_all_but_first_task,
    partition_down,
    served,
    slurm_engine,
    wait_for,
)

from hpc.job import CANCELLED, DONE, FAILED, RUNNING, EngineSpec
from hpc.service import JobService
from ilastik_web.abc import Box
from ilastik_web.sources import open_source

pytestmark = pytest.mark.slurm
#: Generous: a busy machine may take long; the tests wait for states, never for time.
DEADLINE_S = 600
KINDS = ("slurm", "slurm-rest")


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def rest(kind, request):
    return request.getfixturevalue("slurmrestd") if kind == "slurm-rest" else None


def _submit(service, project, output, engine, *, source=None, export="segmentation"):
    generation = project.current_generation()
    job = service.create(classifier=generation.classifier, computer=generation.computer,
                         source=source or project.source_location, output=output,
                         format="ome-zarr", export=export, engine=engine,
                         chunk_shape=(8, 32, 32), block_shape=(8, 32, 32))
    service.start(job)
    return job


def test_slurm_output_equals_local_output(slurm_cluster, kind, rest, trained_project,
                                          tmp_path):
    service = JobService(tmp_path / "jobs")
    engine = slurm_engine(kind, rest, workers=0, blocks_per_task=3, time="00:10:00",
                          mem="1G", cpus=1)
    job = _submit(service, trained_project, tmp_path / "slurm.ome.zarr", engine)
    assert job.state == RUNNING
    assert len(job.record()["handles"]["slurm"]) == 2  # array + finaliser
    summary = service.wait(job.id, timeout=DEADLINE_S)
    assert summary["state"] == DONE, job.logs()
    assert summary["engine"] == kind
    slurm = open_source(str(tmp_path / "slurm.ome.zarr")).base
    full = Box.from_shape(slurm.shape)
    np.testing.assert_array_equal(slurm.read(full), served(trained_project, "segmentation"))
    local = JobService(tmp_path / "local-jobs")
    local_job = _submit(local, trained_project, tmp_path / "local.ome.zarr", EngineSpec())
    assert local.wait(local_job.id, timeout=DEADLINE_S)["state"] == DONE
    np.testing.assert_array_equal(
        open_source(str(tmp_path / "local.ome.zarr")).base.read(full), slurm.read(full))
    assert "slurm-run1" in job.logs()


def test_slurm_failing_worker_fails_the_job(slurm_cluster, kind, rest, trained_project,
                                            tmp_path):
    service = JobService(tmp_path / "jobs")
    source = corrupt_copy(trained_project.source_location, tmp_path / "bad.zarr")
    job = _submit(service, trained_project, tmp_path / "bad.ome.zarr",
                  slurm_engine(kind, rest, workers=0, blocks_per_task=6), source=source)
    summary = service.wait(job.id, timeout=DEADLINE_S)
    assert summary["state"] == FAILED, job.logs()
    assert summary["message"].startswith("block ")
    assert "ERROR" in job.logs()  # the worker's own log line, in the Slurm output file
    assert service.get(job.id)["state"] == FAILED  # and it stays failed


def test_slurm_cancel_then_resume(slurm_cluster, kind, rest, trained_project, tmp_path):
    """Cancel while the first array task runs and the others wait, then resume.

    No race with the cluster's speed: the jobs are queued on a DOWN partition, every
    array task but the first is held, so when the partition comes up only task 0 (two
    blocks) can run, and the cancel always finds work left.
    """
    service = JobService(tmp_path / "jobs")
    engine = slurm_engine(kind, rest, workers=1, blocks_per_task=2)
    with partition_down():
        job = _submit(service, trained_project, tmp_path / "c.ome.zarr", engine,
                      export="probabilities")
        hold_all_but_first_task(job.record()["handles"]["slurm"][0])
    total = job.record()["blocks_total"]
    assert total > 2
    wait_for(lambda: job.blocks_done() >= 1 or service.get(job.id)["state"] != RUNNING,
             "the first block")
    assert service.get(job.id)["state"] == RUNNING, job.logs()
    assert service.cancel(job.id)["state"] in (RUNNING, CANCELLED)
    summary = service.wait(job.id, timeout=DEADLINE_S)
    assert summary["state"] == CANCELLED, job.logs()
    first = job.done_blocks()
    assert 1 <= len(first) <= 2 < total
    reopened = JobService(tmp_path / "jobs")  # state is on disk: any process may resume
    reopened.resume(job.id)
    summary = reopened.wait(job.id, timeout=DEADLINE_S)
    assert summary["state"] == DONE, job.logs()
    runs = job.done_blocks()
    assert {i: r for i, r in runs.items() if r == 1} == first
    assert sum(1 for r in runs.values() if r == 2) == total - len(first)
    result = open_source(str(tmp_path / "c.ome.zarr")).base
    np.testing.assert_array_equal(result.read(Box.from_shape(result.shape)),
                                  served(trained_project, "probabilities"))
