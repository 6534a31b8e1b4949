"""Exports a server starts run in a worker process of their own, at a lower OS priority,
and give the same output as the viewer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from conftest import served

from hpc.job import CANCELLED, DONE, EngineSpec
from hpc.local_process import ProcessLauncher
from hpc.service import JobService
from ilastik_web.abc import Box


def _autogroup(pid: str) -> tuple[str, str] | None:
    """(name, nice) of a process's autogroup; None without autogroups (or once it is
    reaped, or where /proc answers in another format)."""
    try:
        fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    if len(fields) != 3 or fields[1] != "nice":
        return None
    return fields[0], fields[2]


def test_export_runs_in_a_niced_process_and_equals_the_viewer(trained_project, tmp_path):
    launcher = ProcessLauncher(threads=1, nice=2)
    service = JobService(tmp_path / "jobs", launcher=launcher)
    job = service.submit_from_project(trained_project, output=tmp_path / "seg.ome.zarr",
                                      format="ome-zarr", export="segmentation",
                                      engine=EngineSpec(), background=True)
    pid = job.record()["handles"]["owner_pid"]
    assert pid != os.getpid()
    # Set before the child's exec (Popen returns after it): readable while it runs or
    # waits to be reaped.
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 2
    # A session of its own: scheduled as one group against the server's (autogroups).
    assert os.getsid(pid) == pid != os.getsid(0)
    group, ours = _autogroup(str(pid)), _autogroup("self")
    if group is not None and ours is not None:
        assert group == (group[0], "2") and group[0] != ours[0]
    summary = service.wait(job.id, timeout=600)
    assert summary["state"] == DONE, job.logs()
    deadline = time.monotonic() + 120  # the process exits after recording DONE
    while launcher.running(job.id):
        assert time.monotonic() < deadline, "the job's process did not exit"
        time.sleep(0.05)
    assert launcher.running(job.id) is None  # reaped and forgotten
    np.testing.assert_array_equal(
        service.output_source(job.id).base.read(Box.from_shape(trained_project.source.base.shape)),
        served(trained_project, "segmentation"))


def test_cancelled_process_job_ends_cancelled_and_resumes(trained_project, tmp_path):
    launcher = ProcessLauncher(threads=1, nice=1)
    service = JobService(tmp_path / "jobs", launcher=launcher)
    generation = trained_project.current_generation()
    job = service.create(classifier=generation.classifier, computer=generation.computer,
                         source=trained_project.source_location, output=tmp_path / "p.zarr",
                         format="ome-zarr", export="probabilities",
                         chunk_shape=(8, 32, 32), block_shape=(8, 32, 32))
    service.start(job, background=True)
    # Asked while the process is still starting (imports take seconds): it stops at its
    # first check, between blocks.
    service.cancel(job.id)
    summary = service.wait(job.id, timeout=600)
    assert summary["state"] == CANCELLED, job.logs()
    assert summary["blocks_done"] < summary["blocks_total"]
    service.resume(job.id)
    assert service.wait(job.id, timeout=600)["state"] == DONE, job.logs()
    launcher.close()


def test_export_process_threads_override_the_jobs_engine_threads(trained_project, tmp_path):
    from hpc.worker import open_context

    service = JobService(tmp_path / "jobs")
    generation = trained_project.current_generation()
    job = service.create(classifier=generation.classifier, computer=generation.computer,
                         source=trained_project.source_location, output=tmp_path / "t.zarr",
                         format="ome-zarr", export="probabilities", engine=EngineSpec(threads=1))
    folder = str(job.folder.resolve())
    assert open_context(folder, 1).classifier.forest.n_jobs == 1
    # The server's export CPU share, given to its worker process as --threads.
    assert open_context(folder, 1, 2).classifier.forest.n_jobs == 2
