"""``import_ilp`` on every real ilastik fixture: imported in full, or refused in one line."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ilp_fixtures import extract_api_projects, fixture

from ilastik_web.abc import Box
from ilastik_web.cli import main as cli_main
from ilastik_web.ilp import IlpError, import_ilp, read_ilp
from ilastik_web.project import Project


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    return extract_api_projects(tmp_path_factory.mktemp("ilastik"))


def labelled_voxels(project: Project) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, block in project.labels.snapshot().labelled_blocks():
        values, numbers = np.unique(block[block > 0], return_counts=True)
        for v, n in zip(values.tolist(), numbers.tolist(), strict=True):
            counts[v] = counts.get(v, 0) + n
    return counts


def ilp_label_counts(path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for lane in read_ilp(path).label_blocks[:1]:
        for block in lane:
            values, numbers = np.unique(block.data[block.data > 0], return_counts=True)
            for v, n in zip(values.tolist(), numbers.tolist(), strict=True):
                counts[v] = counts.get(v, 0) + n
    return counts


# (fixture, data relative to the fixture folder or None, spatial shape (z, y, x), channels,
#  class names, whether ilastik's forest serves predictions)
IMPORTED = [
    ("ilastik-notebook/pc.ilp", None, (1, 1024, 1344), 1, ["Label 1", "Label 2"], True),
    ("ilastik-test-projects/PixelClassification2d3c.ilp", None, (1, 73, 187), 3,
     ["Label 1", "Label 2"], True),
    ("ilastik-test-projects/PixelClassification3d.ilp", None, (50, 60, 55), 1,
     ["Label 1", "Label 2"], True),
    ("ilastik4ij/pixel_class_2d_cells_apoptotic.ilp", None, (1, 1024, 1344), 1,
     ["foreground", "background"], True),
    ("webilastik/TrainedPixelClassification.ilp", None, (1, 520, 697), 3, None, True),
]


@pytest.mark.parametrize(("name", "data", "shape", "channels", "classes", "forest"), IMPORTED,
                         ids=[case[0].split("/")[-1] for case in IMPORTED])
def test_fixture_imports_with_data_classes_labels_and_forest(
    tmp_path, name, data, shape, channels, classes, forest
) -> None:
    path = fixture(name)
    project = import_ilp(path, tmp_path / "project")
    try:
        assert project.source.base.shape == shape
        assert project.source.base.num_channels == channels
        ilp = read_ilp(path)
        assert [c.name for c in project.classes] == (classes or ilp.class_names)
        colors = ["#" + "".join(f"{v:02x}" for v in rgb) for rgb in ilp.class_colors]
        assert [c.color for c in project.classes] == colors
        assert labelled_voxels(project) == ilp_label_counts(path)
        assert set(project.feature_names) == set(ilp.feature_names)
        assert (project.generation == 1) is forest
    finally:
        project.close()
    reopened = Project.open(tmp_path / "project")
    try:  # the imported forest was saved like a trained one
        assert reopened.generation == 1 and reopened.current_generation() is not None
        assert labelled_voxels(reopened) == ilp_label_counts(path)
    finally:
        reopened.close()


def test_api_projects_import_or_refuse(api, tmp_path) -> None:
    outcomes = {}
    for path in sorted(api.glob("*.ilp")):
        try:
            project = import_ilp(path, tmp_path / path.stem)
        except IlpError as exc:
            assert "\n" not in str(exc)
            outcomes[path.name] = str(exc)
        else:
            outcomes[path.name] = project.import_notes
            project.close()
    assert "workflow 'AutocontextTwoStage' is not Pixel Classification" in outcomes[
        "Autocontext_2D.ilp"]
    assert "no raw data" in outcomes["PixelClassNoData.ilp"]
    assert "raw data not found at /Users/kutra" in outcomes["PixelClass.ilp"]
    assert "pass data=PATH" in outcomes["2464_PixelClassification_xy_input.ilp"]
    assert outcomes["PixelClass3D.ilp"] == []
    assert outcomes["PixelClassNoClassifier.ilp"] == [
        "the project has no labels: paint some to train",
        "the project has no trained classifier: it trains from the labels",
    ]


def test_moved_data_is_given_with_data(api, tmp_path) -> None:
    project = import_ilp(api / "2464_PixelClassification_xy_input.ilp", tmp_path / "p",
                         data=api / "Data_1channel.png")
    try:
        assert project.source.base.shape == (1, 128, 128) and project.generation == 1
        assert project.predict(Box((0, 0, 0), (1, 128, 128))).shape == (2, 1, 128, 128)
    finally:
        project.close()
    with pytest.raises(IlpError, match="raw data has shape"):
        import_ilp(api / "2464_PixelClassification_xy_input.ilp", tmp_path / "q",
                   data=api / "Data_3channel.png")


def test_time_series_is_refused(tmp_path) -> None:
    with pytest.raises(IlpError, match=r"time series \(t=5\) are not supported"):
        import_ilp(fixture("ilastik-test-projects/PixelClassification5t3d2c.ilp"), tmp_path / "p")


def _stand_in_data(path, shape) -> str:
    """Zeros with ilastik's tzyxc axistags, where the omero guide's data was."""
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("data", shape=shape, dtype=np.uint8, chunks=True,
                                   compression="gzip")
        dataset.attrs["axistags"] = json.dumps({"axes": [{"key": k} for k in "tzyxc"]})
    return f"{path}/data"


@pytest.mark.parametrize(("name", "shape", "first_block"), [
    # 1.3.3post2 wrote label blocks in the dataset's own axis order (tzyxc) ...
    ("omero-guide-ilastik/pixel-class-133.ilp", (1, 237, 218, 212, 2),
     ((37, 39), (166, 180), (106, 107))),
    # ... 1.4.1 in the lane's enforced order (zyxc: t=1 dropped)
    ("omero-guide-ilastik/ilastik14-Nov-2024.ilp", (1, 236, 275, 271, 2),
     ((173, 196), (240, 249), (135, 136))),
])
def test_label_blocks_land_in_place_in_every_axis_order(tmp_path, name, shape, first_block):
    path = fixture(name)
    with pytest.raises(IlpError, match="pass data=PATH"):
        import_ilp(path, tmp_path / "without")
    data = _stand_in_data(tmp_path / "raw.h5", shape)
    project = import_ilp(path, tmp_path / "project", data=data)
    try:
        assert project.source.base.shape == shape[1:4]
        assert labelled_voxels(project) == ilp_label_counts(path)
        ilp = read_ilp(path)
        expected = np.squeeze(ilp.label_blocks[0][0].data)
        box = Box(*zip(*first_block, strict=True))
        got = project.labels.read(box)
        np.testing.assert_array_equal(np.squeeze(got), expected)
        assert project.generation == 1  # two channels, 3D: the names still match
    finally:
        project.close()


def test_cli_import_ilp(api, tmp_path, capsys) -> None:
    code = cli_main(["import-ilp", str(api / "PixelClass3D.ilp"), str(tmp_path / "p")])
    assert code == 0
    assert "2 classes" in capsys.readouterr().out
    assert Project.open(tmp_path / "p").generation == 1
    assert cli_main(["import-ilp", str(api / "PixelClassNoData.ilp"), str(tmp_path / "q")]) == 2
    assert "no raw data" in capsys.readouterr().err


def test_not_an_ilp_is_refused(tmp_path) -> None:
    bogus = tmp_path / "x.ilp"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(IlpError, match="not an HDF5 ilastik project"):
        import_ilp(bogus, tmp_path / "p")
    with h5py.File(tmp_path / "y.ilp", "w") as f:
        f["something"] = 1
    with pytest.raises(IlpError, match="no ilastikVersion"):
        import_ilp(tmp_path / "y.ilp", tmp_path / "p")
