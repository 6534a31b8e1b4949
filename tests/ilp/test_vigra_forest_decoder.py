"""The vigra RF decoder: hand-built trees, and vigra's own predictions on ilastik's forests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ilp_fixtures import fixture

from ilastik_web.classify.vigra_forest import (
    LEAF_NODE,
    VigraForest,
    VigraForestClassifier,
    VigraForestError,
)
from ilastik_web.ilp.reader import enforced_axes, parse_block_slice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filters"))
from vigra_reference import SYSTEM_PYTHON, vigra_unavailable_reason  # noqa: E402


def _stump(column: int, threshold: float, left: list[float], right: list[float]):
    """topology/parameters of one split: x[column] < threshold goes left."""
    topology = np.array([3, 2, 0, 0, 7, 9, column, LEAF_NODE, 2, LEAF_NODE, 5], dtype=np.int32)
    parameters = np.array([1.0, threshold, 10.0, *left, 20.0, *right])
    return topology, parameters


def test_a_split_goes_left_below_its_threshold_and_trees_average() -> None:
    forest = VigraForest([
        (*_stump(1, 0.5, [1.0, 0.0], [0.0, 1.0]), [1, 2]),
        (*_stump(2, 0.0, [0.5, 0.5], [0.0, 1.0]), [1, 2]),
    ], feature_count=3)
    samples = np.array([[9, 0.4, -1], [9, 0.5, -1], [9, 0.4, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(forest.predict_proba(samples),
                               [[0.75, 0.25], [0.25, 0.75], [0.5, 0.5]])
    assert forest.split_counts().tolist() == [0, 1, 1]


def test_forests_with_other_label_orders_are_merged_by_label() -> None:
    forest = VigraForest([
        (*_stump(0, 0.5, [1.0, 0.0], [0.0, 1.0]), [1, 2]),
        (*_stump(0, 0.5, [1.0, 0.0], [0.0, 1.0]), [2, 1]),
    ], feature_count=3)
    assert forest.labels == (1, 2)
    np.testing.assert_allclose(forest.predict_proba(np.zeros((1, 3), np.float32)), [[0.5, 0.5]])


def test_classifier_maps_columns_and_classes() -> None:
    forest = VigraForest([(*_stump(0, 0.5, [1.0, 0.0], [0.0, 1.0]), [1, 2])], feature_count=3)
    # forest column 0 reads our channel 2; class 3 is unknown to the forest
    classifier = VigraForestClassifier(forest, (2, 1, 3), ("a", "b", "c"), (2, 0, 1))
    features = np.zeros((3, 1, 2, 2), np.float32)
    features[2, 0, 0, 0] = 1.0
    proba = classifier.predict_proba(features)
    assert proba.shape == (3, 1, 2, 2)
    assert proba[:, 0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert proba[:, 0, 1, 1].tolist() == [0.0, 1.0, 0.0]
    assert classifier.feature_importances() == {"a": 0.0, "b": 0.0, "c": 1.0}


@pytest.mark.parametrize("topology", [
    np.array([3, 2, 7, 0], dtype=np.int32),  # an unknown node type
    np.array([3, 2, 0, 0, 99, 99, 0], dtype=np.int32),  # children point nowhere
])
def test_malformed_trees_are_refused(topology) -> None:
    with pytest.raises(VigraForestError):
        VigraForest([(topology, np.zeros(8), [1, 2])], feature_count=3)


def test_block_slices_and_axis_orders() -> None:
    assert parse_block_slice("[25:28,4:25,6:26,0:1]") == (
        slice(25, 28), slice(4, 25), slice(6, 26), slice(0, 1))
    assert enforced_axes("yxc", (128, 128, 1)) == "yxc"
    assert enforced_axes("yx", (128, 128)) == "yxc"
    assert enforced_axes("zyx", (50, 60, 55)) == "zyxc"
    assert enforced_axes("tzyxc", (1, 1, 1024, 1344, 1)) == "yxc"
    assert enforced_axes("tzyxc", (1, 236, 275, 271, 2)) == "zyxc"
    assert enforced_axes("tzyxc", (5, 33, 77, 45, 2)) == "tzyxc"
    assert enforced_axes("tyxc", (5, 30, 40, 1)) == "tyxc"


VIGRA_PREDICT = """
import sys, numpy as np, vigra
path, samples_path, out_path, *names = sys.argv[1:]
samples = np.load(samples_path)
total, trees = 0, 0
for name in names:
    rf = vigra.learning.RandomForest(path, "PixelClassification/ClassifierForests/" + name)
    total = total + rf.predictProbabilities(samples) * rf.treeCount()
    trees += rf.treeCount()
np.save(out_path, total / trees)
"""


@pytest.mark.vigra
@pytest.mark.skipif(vigra_unavailable_reason() is not None, reason=str(vigra_unavailable_reason()))
@pytest.mark.parametrize("name", ["ilastik-notebook/pc.ilp",
                                  "ilastik-test-projects/PixelClassification2d3c.ilp"])
def test_decoder_predicts_what_vigra_predicts(tmp_path, name) -> None:
    path = fixture(name)
    with h5py.File(path, "r") as f:
        group = f["PixelClassification/ClassifierForests"]
        names = sorted(k for k in group if k.startswith("Forest"))
        forest = VigraForest.from_hdf5([group[k] for k in names])
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal((3000, forest.feature_count)) * 50 + 100).astype(np.float32)
    np.save(tmp_path / "samples.npy", samples)
    run = subprocess.run([SYSTEM_PYTHON, "-c", VIGRA_PREDICT, str(path),
                          str(tmp_path / "samples.npy"), str(tmp_path / "out.npy"), *names],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(forest.predict_proba(samples), theirs, atol=1e-6)
