"""Exports steered from the viewer: the output dtype, and the project's feature channels."""

import numpy as np
import pytest
from conftest import make_blobs, paint_and_train, served, write_zarr

from hpc.job import DONE, EngineSpec
from hpc.service import JobService
from ilastik_web.abc import Box
from ilastik_web.classify.blockwise import output_dtype
from ilastik_web.classify.forest import uncertainty_from_probabilities
from ilastik_web.errors import InvalidRequestError
from ilastik_web.project import Project
from ilastik_web.sources import open_source

SMALL = {"chunk_shape": (8, 32, 32), "block_shape": (8, 32, 32)}


def _export(service, project, output, **kwargs):
    job = service.submit_from_project(project, output=output, format=kwargs.pop("format",
                                      "ome-zarr"), engine=EngineSpec(workers=1),
                                      background=False, **kwargs)
    summary = service.get(job.id)
    assert summary["state"] == DONE, job.logs()
    return summary, open_source(str(output)).base


@pytest.mark.parametrize("export,dtype,format", [
    ("probabilities", "float32", "ome-zarr"), ("probabilities", "uint16", "n5"),
    ("uncertainty", "float32", "hdf5"), ("segmentation", "uint16", "ome-zarr"),
])
def test_output_dtype_is_written_as_asked(trained_project, tmp_path, export, dtype, format):
    service = JobService(tmp_path / "jobs")
    suffix = {"ome-zarr": ".ome.zarr", "n5": ".n5", "hdf5": ".h5"}[format]
    summary, result = _export(service, trained_project, tmp_path / f"out{suffix}",
                              export=export, dtype=dtype, format=format)
    assert summary["dtype"] == dtype
    full = Box.from_shape(trained_project.source.base.shape)
    got = result.read(full)
    assert got.dtype == np.dtype(dtype)
    proba = trained_project.predict(full)  # the forest's float32 probabilities
    if export == "segmentation":
        values = np.asarray(trained_project.current_generation().classifier.label_values)
        np.testing.assert_array_equal(got[0], values[np.argmax(proba, axis=0)])
        return
    expected = uncertainty_from_probabilities(proba) if export == "uncertainty" else proba
    if dtype == "float32":
        np.testing.assert_allclose(got, expected, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, np.rint(expected * 65535).astype(np.uint16))
        # From the forest's values, not the viewer's uint8 rescaled.
        assert not np.array_equal(got, served(trained_project, export).astype(np.uint16) * 257)


def test_dtypes_an_export_cannot_have_are_refused():
    with pytest.raises(InvalidRequestError, match="segmentation cannot be stored as 'float32'"):
        output_dtype("segmentation", "float32")
    with pytest.raises(InvalidRequestError, match="features cannot"):
        output_dtype("features", "uint8")
    assert output_dtype("probabilities") == np.uint8
    assert output_dtype("features") == np.float32


def test_batch_export_uses_the_projects_feature_channels(tmp_path):
    image, truth = make_blobs()
    noise = np.random.default_rng(3).integers(0, 1000, image.shape).astype(image.dtype)
    source = write_zarr(tmp_path / "two.zarr", np.stack([noise, image]), chunks=(1, 8, 32, 32))
    project = Project.create(tmp_path / "p", source, classes=["background", "blob"],
                             selection=[("GaussianSmoothing", 1.0),
                                        ("HessianOfGaussianEigenvalues", 1.0)],
                             feature_channels=[1])
    paint_and_train(project, truth)
    service = JobService(tmp_path / "jobs")
    summary, result = _export(service, project, tmp_path / "proba.ome.zarr",
                              export="probabilities")
    assert summary["feature_channels"] == [1]
    np.testing.assert_array_equal(result.read(Box.from_shape(result.shape)),
                                  served(project, "probabilities"))
    features, result = _export(service, project, tmp_path / "features.ome.zarr",
                               export="features")
    assert result.num_channels == project.current_generation().computer.num_features
    np.testing.assert_array_equal(result.read(Box.from_shape(result.shape)),
                                  served(project, "features"))
    project.close()
