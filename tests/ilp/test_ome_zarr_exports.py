"""OME-Zarr 0.4 exports read back by ``ome-zarr`` (napari's reader) with names and colours."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ilp_fixtures import extract_api_projects

from hpc.job import DONE
from hpc.service import JobService
from ilastik_web.exports import export_labels
from ilastik_web.ilp import import_ilp
from ilastik_web.ngff import rgb

ome_zarr_io = pytest.importorskip("ome_zarr.io")
ome_zarr_reader = pytest.importorskip("ome_zarr.reader")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("export")
    api = extract_api_projects(folder)
    # three classes, RGB, 2D, with ilastik's forest serving predictions
    imported = import_ilp(api / "PixelClass3Channel.ilp", folder / "project")
    yield imported
    imported.close()


def read_nodes(path) -> list:
    location = ome_zarr_io.parse_url(str(path))
    assert location is not None, f"ome-zarr cannot open {path}"
    return list(ome_zarr_reader.Reader(location)())


def label_node(nodes):
    found = [n for n in nodes if any(isinstance(s, ome_zarr_reader.Label) for s in n.specs)]
    assert len(found) == 1, [n.specs for n in nodes]
    return found[0]


def expected_colors(project) -> dict[int, list[float]]:
    return {c.value: [v / 255 for v in (*rgb(c.color), 255)] for c in project.classes}


def test_painted_labels_open_in_ome_zarr_with_class_colours(project, tmp_path) -> None:
    path = export_labels(project, tmp_path / "labels.ome.zarr")
    attributes = json.loads((path / ".zattrs").read_text())
    assert attributes["multiscales"][0]["version"] == "0.4"
    node = label_node(read_nodes(path))
    assert node.metadata["name"] == "annotations"
    assert node.metadata["color"] == expected_colors(project)
    assert node.metadata["properties"] == {c.value: {"class": c.name} for c in project.classes}
    painted = project.labels.read(project.source.base.bounds)  # (z, y, x)
    np.testing.assert_array_equal(np.asarray(node.data[0]), painted)
    image = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    label = json.loads((path / "labels/annotations/.zattrs").read_text())["multiscales"][0]
    assert len(label["datasets"]) == len(image["datasets"])  # as many levels as the image


@pytest.mark.slow  # two batch jobs, each starting local dask worker processes
def test_segmentation_and_probability_exports_carry_names_and_colours(project, tmp_path):
    service = JobService(tmp_path / "jobs")
    segmentation = service.submit_from_project(
        project, output=tmp_path / "seg.ome.zarr", format="ome-zarr", export="segmentation",
        background=False)
    probabilities = service.submit_from_project(
        project, output=tmp_path / "prob.ome.zarr", format="ome-zarr", export="probabilities",
        background=False)
    assert segmentation.record()["state"] == probabilities.record()["state"] == DONE

    node = label_node(read_nodes(tmp_path / "seg.ome.zarr"))
    assert node.metadata["name"] == "segmentation"
    assert node.metadata["color"] == expected_colors(project)
    seg = np.asarray(node.data[0])
    image = np.asarray(read_nodes(tmp_path / "seg.ome.zarr")[0].data[0])
    np.testing.assert_array_equal(seg, image[0])  # labels/segmentation holds the same values
    assert set(np.unique(seg)) <= {c.value for c in project.classes}

    nodes = read_nodes(tmp_path / "prob.ome.zarr")
    assert nodes[0].metadata["channel_names"] == [c.name for c in project.classes]
    assert nodes[0].metadata["colormap"] == [
        [[0, 0, 0], [v / 255 for v in rgb(c.color)]] for c in project.classes]
