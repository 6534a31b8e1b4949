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


@pytest.mark.parametrize("fmt", ["ome-zarr", "ome-zarr-0.5"])
def test_store_writes_ngff_04_by_default_and_05_on_request(tmp_path, fmt) -> None:
    from hpc.writers import OutputLayout, OutputStore
    from ilastik_web.abc import Box
    from ilastik_web.ngff import ClassInfo
    from ilastik_web.sources import open_source

    classes = (ClassInfo(1, "background", "#ff0000"), ClassInfo(2, "cell", "#00ff00"))
    layout = OutputLayout((4, 150, 140), 1, "uint8", (4, 64, 64), (40.0, 8.0, 8.0),
                          "segmentation", classes=classes)
    store = OutputStore(fmt, tmp_path / "seg.ome.zarr", tmp_path / "staging", layout)
    store.create()
    values = np.random.default_rng(0).integers(1, 3, (1, 4, 150, 140), dtype=np.uint8)
    store.write(Box((0, 0, 0), (4, 150, 140)), values)
    store.finalize()
    root = tmp_path / "seg.ome.zarr"
    if fmt == "ome-zarr":
        assert json.loads((root / ".zattrs").read_text())["multiscales"][0]["version"] == "0.4"
        assert not (root / "zarr.json").exists()
    else:
        ome = json.loads((root / "zarr.json").read_text())["attributes"]["ome"]
        assert ome["version"] == "0.5" and "version" not in ome["multiscales"][0]
        label = json.loads((root / "labels/segmentation/zarr.json").read_text())
        assert label["attributes"]["ome"]["image-label"]["colors"][1] == {
            "label-value": 2, "rgba": [0, 255, 0, 255]}
    node = label_node(read_nodes(root))
    assert node.metadata["color"] == {1: [1.0, 0.0, 0.0, 1.0], 2: [0.0, 1.0, 0.0, 1.0]}
    np.testing.assert_array_equal(np.asarray(node.data[0]), values[0])
    image = [n for n in read_nodes(root) if n is not node][0]
    assert [a.shape for a in node.data] == [a.shape[1:] for a in image.data]  # every level
    reopened = open_source(str(root))  # and our own reader opens both versions
    np.testing.assert_array_equal(reopened.base.read(Box((0, 0, 0), (4, 150, 140))), values)
