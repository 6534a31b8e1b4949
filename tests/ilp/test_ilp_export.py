"""``export_ilp``: ilastik 1.4's layout, checked against files ilastik wrote, and round trips."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
from ilp_fixtures import extract_api_projects

from ilastik_web.cli import main as cli_main
from ilastik_web.ilp import IlpError, export_ilp, import_ilp, read_ilp
from ilastik_web.ilp.reader import enforced_axes
from ilastik_web.project import Project

#: What ilastik writes and we leave out on purpose: the classifier (ilastik retrains from
#: the labels; nothing pickled is written) and the lane's axistags/shape (ilastik then takes
#: the axes the data file declares).
OMITTED = {
    "Input Data/infos/lane0000/Raw Data": {"axistags", "shape"},
    "PixelClassification": {"Bookmarks", "ClassifierFactory", "ClassifierForests"},
}
GROUPS = ["", "Input Data", "Input Data/infos/lane0000", "Input Data/infos/lane0000/Raw Data",
          "FeatureSelections", "PixelClassification", "Prediction Export"]
EQUAL_VALUES = ["workflowName", "Input Data/Role Names", "Input Data/StorageVersion",
                "FeatureSelections/FeatureIds", "FeatureSelections/Scales",
                "FeatureSelections/SelectionMatrix", "FeatureSelections/ComputeIn2d",
                "FeatureSelections/StorageVersion", "PixelClassification/LabelNames",
                "PixelClassification/LabelColors", "PixelClassification/PmapColors",
                "PixelClassification/StorageVersion", "Prediction Export/StorageVersion",
                "Input Data/infos/lane0000/Raw Data/allowLabels",
                "Input Data/infos/lane0000/Raw Data/location"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    return extract_api_projects(tmp_path_factory.mktemp("ilastik"))


def _kind(dataset: h5py.Dataset) -> str:
    if dataset.dtype.kind in "OSU":
        return "string"
    return {"b": "bool", "i": "int", "u": "int", "f": "float", "V": "opaque"}[dataset.dtype.kind]


def rasterize(path, shape) -> np.ndarray:
    """Every label block of lane 0 painted into one (z, y, x) array, as ilastik loads them."""
    ilp = read_ilp(path)
    out = np.zeros(shape, np.uint8)
    lane = ilp.lanes[0]
    lane_shape = (*shape, 1) if shape[0] > 1 else (*shape[1:], 1)
    lane_axes = "zyxc" if shape[0] > 1 else "yxc"
    for block in ilp.label_blocks[0]:
        axes = ilp.saved_label_axes(lane, block, lane_axes, lane_shape)
        spans = dict(zip(axes, block.slices, strict=True))
        data = np.squeeze(block.data, axis=axes.index("c"))
        if "z" not in axes:
            data, spans["z"] = data[None], slice(0, 1)
        index = tuple(spans[a] for a in "zyx")
        out[index] = np.where(data > 0, data, out[index])
    return out


@pytest.mark.parametrize("name", ["PixelClass3D.ilp", "PixelClass3Channel.ilp"])
def test_export_has_ilastiks_layout_and_reimports_equal(api, tmp_path, name) -> None:
    original = api / name
    project = import_ilp(original, tmp_path / "project")
    exported = export_ilp(project, tmp_path / "exported.ilp")
    shape = project.source.base.shape
    with h5py.File(original, "r") as theirs, h5py.File(exported, "r") as ours:
        assert ours["ilastikVersion"][()] == b"1.4.1"  # >= 1.4.0b8: enforced label order
        for group in GROUPS:
            mine, reference = ours[group] if group else ours, theirs[group] if group else theirs
            assert set(mine) <= set(reference), (group, set(mine) - set(reference))
            assert set(reference) - set(mine) <= OMITTED.get(group, set()) | {
                "currentApplet", "local_data"} & set(reference), group
            for key in set(mine) & set(reference):
                a, b = mine[key], reference[key]
                assert type(a) is type(b), (group, key)
                if isinstance(a, h5py.Dataset):
                    assert _kind(a) == _kind(b), (group, key)
                    assert set(a.attrs) == set(b.attrs), (group, key)
                    if _kind(a) == "string" and a.shape == ():
                        assert isinstance(a[()], bytes), (group, key)  # ilastik .decode()s
        for key in EQUAL_VALUES:
            np.testing.assert_array_equal(ours[key][()], theirs[key][()], err_msg=key)
        blocks = ours["PixelClassification/LabelSets/labels000"]
        assert len(blocks)
        axes = enforced_axes("zyxc", (*shape, 1))
        for block in blocks.values():
            assert block.dtype == np.uint8 and block.ndim == len(axes)
            assert set(block.attrs) == {"blockSlice", "axistags"}
            assert re.fullmatch(r"\[(\d+:\d+,)*0:1\]", block.attrs["blockSlice"])
            assert block[()].any()
    np.testing.assert_array_equal(rasterize(exported, shape), rasterize(original, shape))

    again = import_ilp(exported, tmp_path / "again")
    try:
        assert again.classes == project.classes
        assert again.selection == project.selection
        np.testing.assert_array_equal(again.labels.read(again.source.base.bounds),
                                      project.labels.read(project.source.base.bounds))
        assert again.generation == 0  # no forest travels: ilastik (and we) retrain
        assert again.import_notes == [
            "the project has no trained classifier: it trains from the labels"]
    finally:
        again.close()
        project.close()


def test_removed_class_values_become_ilastiks_consecutive_ones(api, tmp_path) -> None:
    project = import_ilp(api / "PixelClass3Channel.ilp", tmp_path / "project")
    try:
        project.remove_class(1)  # classes 2 and 3 remain: ilastik's values 1 and 2
        exported = export_ilp(project, tmp_path / "out.ilp")
        ilp = read_ilp(exported)
        assert ilp.class_names == ["Label 2", "Label 3"]
        values = np.unique(np.concatenate([b.data.ravel() for b in ilp.label_blocks[0]]))
        assert values.tolist() == [0, 1, 2]  # 0: unlabelled voxels inside the crops
    finally:
        project.close()


def test_a_scale_in_2d_and_in_3d_cannot_be_exported(api, tmp_path) -> None:
    project = import_ilp(api / "PixelClass3D.ilp", tmp_path / "project")
    try:
        project.set_selection([("GaussianSmoothing", 1.0, True), ("LaplacianOfGaussian", 1.0)])
        with pytest.raises(IlpError, match="both in 2D and in 3D"):
            export_ilp(project, tmp_path / "out.ilp")
        assert not (tmp_path / "out.ilp").exists()
    finally:
        project.close()


def test_cli_export_ilp(api, tmp_path, capsys) -> None:
    project = import_ilp(api / "PixelClass3D.ilp", tmp_path / "project")
    project.close()
    assert cli_main(["export-ilp", str(tmp_path / "project"), str(tmp_path / "out.ilp")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert read_ilp(tmp_path / "out.ilp").class_names == ["Label 1", "Label 2"]
    assert cli_main(["export-ilp", str(tmp_path / "nothing"), str(tmp_path / "x.ilp")]) == 2
    assert "no project" in capsys.readouterr().err
    reopened = Project.open(tmp_path / "project")
    reopened.close()
