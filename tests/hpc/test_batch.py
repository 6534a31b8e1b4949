"""Batch prediction on dask: outputs equal the served volumes, formats, cancel/resume."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import corrupt_copy, served

from hpc.job import CANCELLED, DONE, FAILED, RUNNING, EngineSpec
from hpc.service import JobService
from hpc.writers import OutputLayout, OutputStore
from ilastik_web.abc import Box
from ilastik_web.pyramid import downsample_mean
from ilastik_web.sources import open_source

SMALL = {"chunk_shape": (8, 32, 32), "block_shape": (8, 32, 32)}


def _service(project, tmp_path):
    return JobService(tmp_path / "jobs")


def _submit(service, project, output, *, export="segmentation", format="ome-zarr",
            engine=None, background=False, chunk=(8, 32, 32), block=(8, 32, 32), **kwargs):
    generation = project.current_generation()
    job = service.create(classifier=generation.classifier, computer=generation.computer,
                         source=kwargs.pop("source", project.source_location), output=output,
                         format=format, export=export, engine=engine,
                         generation=generation.number, chunk_shape=chunk, block_shape=block,
                         **kwargs)
    service.start(job, background=background)
    return job


@pytest.mark.parametrize("export", ["probabilities", "segmentation", "uncertainty", "features"])
def test_export_equals_what_the_viewer_shows(trained_project, tmp_path, dask_address, export):
    service = _service(trained_project, tmp_path)
    engine = EngineSpec(kind="dask", address=dask_address)
    job = _submit(service, trained_project, tmp_path / "out.ome.zarr", export=export,
                  engine=engine)
    summary = service.get(job.id)
    assert summary["state"] == DONE, job.logs()
    assert summary["blocks_done"] == summary["blocks_total"] == 12
    result = open_source(str(tmp_path / "out.ome.zarr")).base
    full = Box.from_shape(result.shape)
    expected = served(trained_project, export)
    got = result.read(full)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("format,name", [("n5", "out.n5"), ("precomputed", "out_precomputed"),
                                         ("hdf5", "out.h5"), ("tiff", "out.tif")])
def test_formats_round_trip(trained_project, tmp_path, dask_address, format, name):
    service = _service(trained_project, tmp_path)
    roi = Box((2, 5, 10), (21, 60, 64))
    job = _submit(service, trained_project, tmp_path / name, export="probabilities",
                  format=format, engine=EngineSpec(kind="dask", address=dask_address), roi=roi)
    assert service.get(job.id)["state"] == DONE, job.logs()
    result = open_source(str(tmp_path / name)).base
    assert result.shape == roi.shape
    assert result.num_channels == 2
    np.testing.assert_array_equal(result.read(Box.from_shape(roi.shape)),
                                  served(trained_project, "probabilities", roi))
    assert not job.staging_path.exists()


def test_local_engine_default_and_state_survives_reopening(trained_project, tmp_path):
    service = _service(trained_project, tmp_path)
    job = service.submit_from_project(trained_project, output=tmp_path / "seg.ome.zarr",
                                      format="ome-zarr", export="segmentation",
                                      engine=EngineSpec(workers=2), background=True)
    summary = service.wait(job.id, timeout=120)
    assert summary["state"] == DONE, job.logs()
    assert summary["generation"] == trained_project.generation
    reopened = JobService(tmp_path / "jobs")  # a server restart
    again = reopened.get(job.id)
    assert again["state"] == DONE and again["blocks_done"] == again["blocks_total"]
    assert [j["id"] for j in reopened.list()] == [job.id]
    np.testing.assert_array_equal(reopened.output_source(job.id).base.read(
        Box.from_shape(trained_project.source.base.shape)), served(trained_project, "segmentation"))


def test_logs_show_per_block_progress_and_an_eta(trained_project, tmp_path):
    service = _service(trained_project, tmp_path)
    job = _submit(service, trained_project, tmp_path / "seg.ome.zarr",
                  engine=EngineSpec(workers=1))
    summary = service.get(job.id)
    assert summary["state"] == DONE, job.logs()
    logs, total = job.logs(), summary["blocks_total"]
    assert total > 2
    for index in range(total):
        assert f"block {index} done in " in logs, logs
    assert f"{total}/{total} blocks" in logs and "ETA " in logs, logs


def test_running_job_of_a_dead_process_becomes_failed_and_resumes(trained_project, tmp_path):
    service = _service(trained_project, tmp_path)
    generation = trained_project.current_generation()
    job = service.create(classifier=generation.classifier, computer=generation.computer,
                         source=trained_project.source_location, output=tmp_path / "o.zarr",
                         format="ome-zarr", export="uncertainty", **SMALL)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job.update(state=RUNNING, run=1, handles={"owner_pid": dead.pid})
    summary = JobService(tmp_path / "jobs").get(job.id)
    assert summary["state"] == FAILED and "interrupted" in summary["message"]
    assert service.resume(job.id, background=False)["state"] == DONE


def test_cancel_then_resume_recomputes_only_missing_blocks(trained_project, tmp_path):
    service = _service(trained_project, tmp_path)
    job = _submit(service, trained_project, tmp_path / "p.ome.zarr", export="probabilities",
                  engine=EngineSpec(workers=1), background=True, chunk=(8, 16, 16),
                  block=(8, 16, 16))
    total = job.record()["blocks_total"]
    assert total == 48
    deadline = time.monotonic() + 120
    while job.blocks_done() < 3:
        assert time.monotonic() < deadline and job.state == RUNNING, job.logs()
        time.sleep(0.02)
    service.cancel(job.id)
    summary = service.wait(job.id, timeout=60)
    assert summary["state"] == CANCELLED, job.logs()
    first = job.done_blocks()
    assert 3 <= len(first) < total
    assert set(first.values()) == {1}
    summary = service.resume(job.id, background=False)
    assert summary["state"] == DONE, job.logs()
    runs = job.done_blocks()
    assert sum(1 for r in runs.values() if r == 1) == len(first)
    assert sum(1 for r in runs.values() if r == 2) == total - len(first)
    result = open_source(str(tmp_path / "p.ome.zarr")).base
    np.testing.assert_array_equal(result.read(Box.from_shape(result.shape)),
                                  served(trained_project, "probabilities"))


def test_corrupt_input_block_fails_the_job_with_the_error_logged(trained_project, tmp_path,
                                                                   dask_address):
    service = _service(trained_project, tmp_path)
    source = corrupt_copy(trained_project.source_location, tmp_path / "bad.zarr")
    job = _submit(service, trained_project, tmp_path / "bad.ome.zarr", source=source,
                  engine=EngineSpec(kind="dask", address=dask_address))
    summary = service.get(job.id)
    assert summary["state"] == FAILED
    assert summary["message"].startswith("block ")
    # the export names the unreadable chunk, as the viewer's notice does
    assert "unreadable chunk" in summary["message"] and "bad.zarr" in summary["message"]
    assert "bad.zarr" in job.logs() or "Error" in job.logs()
    assert job.failures()


@pytest.mark.parametrize("export,dtype", [("probabilities", "uint8"),
                                          ("segmentation", "uint8")])
def test_ome_zarr_pyramid(tmp_path, export, dtype, rng):
    shape = (1, 150, 130)
    layout = OutputLayout(shape, 2 if export == "probabilities" else 1, dtype, (1, 32, 32),
                          (1.0, 4.0, 4.0), export)
    store = OutputStore("ome-zarr", tmp_path / "o.ome.zarr", tmp_path / "staging", layout,
                        pyramid_min_size=40)
    store.create()
    data = rng.integers(1, 3, size=(layout.channels, *shape)).astype(np.uint8)
    for box in Box.from_shape(shape).chunks((1, 64, 64)):
        store.write(box, data[(slice(None), *box.slices)])
    store.finalize()
    volume = open_source(str(tmp_path / "o.ome.zarr"))
    assert [level.shape for level in volume.levels] == [(1, 150, 130), (1, 75, 65), (1, 38, 33)]
    assert volume.levels[1].voxel_size == (1.0, 8.0, 8.0)
    level1 = volume.levels[1].read(Box.from_shape((1, 75, 65)))
    if export == "probabilities":
        np.testing.assert_array_equal(level1, downsample_mean(data, (1, 2, 2)))
    else:
        assert set(np.unique(level1)) <= {1, 2}


def test_refuses_existing_output_and_bad_requests(trained_project, tmp_path):
    service = _service(trained_project, tmp_path)
    (tmp_path / "exists.zarr").mkdir()
    generation = trained_project.current_generation()
    common = {"classifier": generation.classifier, "computer": generation.computer,
              "source": trained_project.source_location}
    from ilastik_web.errors import ConflictError, InvalidRequestError

    with pytest.raises(ConflictError, match="exists"):
        service.create(**common, output=tmp_path / "exists.zarr", format="ome-zarr",
                       export="segmentation")
    cases = [
        ({"output": tmp_path / "o.zarr", "format": "jpeg", "export": "segmentation"}, "format"),
        ({"output": tmp_path / "o.zarr", "format": "n5", "export": "edges"}, "export"),
        ({"output": tmp_path / "o.zarr", "format": "n5", "export": "segmentation",
          "level": 5}, "level"),
        ({"output": tmp_path / "no" / "o.zarr", "format": "n5", "export": "segmentation"},
         "folder"),
        ({"output": tmp_path / "o.zarr", "format": "n5", "export": "segmentation",
          "memory_bytes": 1000}, "too small"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InvalidRequestError, match=match):
            service.create(**common, **kwargs)
    assert os.listdir(tmp_path / "jobs") == []
    assert not os.path.lexists(tmp_path / "o.zarr")  # refused jobs reserve nothing
