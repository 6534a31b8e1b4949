"""Exports written to a real Swift (S3 API): voxel-exact against what the viewer shows,
for every object-storage format, readable back as sources; bad targets refused."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from conftest import served

from hpc.job import DONE, EngineSpec
from hpc.service import JobService
from ilastik_web.abc import Box
from ilastik_web.errors import ConflictError, InvalidRequestError
from ilastik_web.sources import open_source

BUCKET = "exports"


@pytest.fixture(scope="module")
def bucket(swift):
    swift.create_container(BUCKET)
    return BUCKET


def _submit(service, project, output, fmt, export, engine=None):
    generation = project.current_generation()
    job = service.create(classifier=generation.classifier, computer=generation.computer,
                         source=project.source_location, output=output, format=fmt,
                         export=export, engine=engine or EngineSpec(),
                         chunk_shape=(8, 32, 32), block_shape=(8, 32, 32))
    service.start(job, background=False)
    return job


@pytest.mark.parametrize("fmt,export", [("ome-zarr", "segmentation"),
                                        ("n5", "probabilities"),
                                        ("precomputed", "uncertainty")])
def test_export_to_swift_is_voxel_exact(bucket, trained_project, tmp_path, fmt, export):
    service = JobService(tmp_path / "jobs")
    output = f"s3://{bucket}/{uuid.uuid4().hex}/result"
    job = _submit(service, trained_project, output, fmt, export)
    summary = service.get(job.id)
    assert summary["state"] == DONE, job.logs()
    assert summary["output"] == output
    assert not (tmp_path / "s3:").exists()  # nothing went to a local look-alike path
    result = open_source(output)
    expected = served(trained_project, export)
    got = result.base.read(Box.from_shape(result.base.shape))
    if export == "segmentation":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    if fmt == "ome-zarr":  # the pyramid went to Swift too
        assert len(result.levels) == len(open_source(output).levels) >= 1


def test_bad_object_outputs_are_refused(bucket, trained_project, tmp_path):
    service = JobService(tmp_path / "jobs")
    with pytest.raises(InvalidRequestError, match="local files only"):
        _submit(service, trained_project, f"s3://{bucket}/x/out.h5", "hdf5", "segmentation")
    with pytest.raises(InvalidRequestError, match="folder inside the bucket"):
        _submit(service, trained_project, f"s3://{bucket}", "n5", "segmentation")
    output = f"s3://{bucket}/{uuid.uuid4().hex}/once.n5"
    _submit(service, trained_project, output, "n5", "segmentation")
    with pytest.raises(ConflictError, match="already exists"):
        _submit(service, trained_project, output, "n5", "segmentation")


def test_one_new_object_output_goes_to_one_job(bucket, trained_project, tmp_path):
    """Object stores have no exclusive create: of two jobs asking for one new output before
    either wrote to it, the service gives it to the first only."""
    service = JobService(tmp_path / "jobs")
    generation = trained_project.current_generation()
    output = f"s3://{bucket}/{uuid.uuid4().hex}/shared.zarr"

    def create():
        return service.create(classifier=generation.classifier,
                              computer=generation.computer,
                              source=trained_project.source_location, output=output,
                              format="ome-zarr", export="segmentation",
                              chunk_shape=(8, 32, 32), block_shape=(8, 32, 32))

    first = create()  # PENDING: nothing is in the bucket yet
    with pytest.raises(ConflictError, match="another job"):
        create()
    service.start(first, background=False)
    assert service.get(first.id)["state"] == DONE
