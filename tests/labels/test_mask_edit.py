"""Mask edits in the label store: durable, undoable, replayed on reopen like strokes."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels import LabelStore, Stroke

SHAPE = (20, 70, 90)


def _mask(box: Box, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(box.shape) < 0.4


@pytest.mark.parametrize("block_shape", [(8, 16, 16), (64, 64, 64)])
def test_paint_mask_sets_exactly_the_mask(block_shape):
    store = LabelStore(SHAPE, block_shape=block_shape)
    box = Box((3, 10, 20), (9, 45, 77))
    mask = _mask(box, 0)
    result = store.paint_mask(box, mask, 3)
    labels = store.read(Box.from_shape(SHAPE))
    expected = np.zeros(SHAPE, np.uint8)
    expected[box.slices][mask] = 3
    np.testing.assert_array_equal(labels, expected)
    assert result.revision == 1 and box.contains(result.box)


def test_mask_undo_redo_and_erase():
    store = LabelStore(SHAPE, block_shape=(8, 16, 16))
    store.paint(Stroke(((5.5, 30.5, 30.5),), radius=6, label=1, plane="3d"))
    before = store.read(Box.from_shape(SHAPE))
    box = Box((4, 25, 25), (7, 40, 40))
    store.paint_mask(box, np.ones(box.shape, bool), 2)
    painted = store.read(Box.from_shape(SHAPE))
    assert (painted[box.slices] == 2).all()
    store.undo()
    np.testing.assert_array_equal(store.read(Box.from_shape(SHAPE)), before)
    store.redo()
    np.testing.assert_array_equal(store.read(Box.from_shape(SHAPE)), painted)
    store.paint_mask(box, np.ones(box.shape, bool), 0)
    assert (store.read(box) == 0).all()


def test_mask_edits_survive_reopen(tmp_path):
    store = LabelStore(SHAPE, tmp_path, block_shape=(8, 16, 16))
    box_a, box_b = Box((0, 0, 0), (5, 30, 30)), Box((2, 20, 20), (12, 60, 80))
    store.paint_mask(box_a, _mask(box_a, 1), 1)
    store.paint_mask(box_b, _mask(box_b, 2), 4)
    store.undo()
    store.redo()
    store.paint_mask(box_a, _mask(box_a, 3), 0)
    store.undo()
    expected = store.read(Box.from_shape(SHAPE))
    revision = store.revision
    store.close()  # no checkpoint: everything comes back from the log
    reopened = LabelStore(SHAPE, tmp_path, block_shape=(8, 16, 16))
    assert reopened.revision == revision
    np.testing.assert_array_equal(reopened.read(Box.from_shape(SHAPE)), expected)
    assert reopened.can_redo
    reopened.redo()
    assert (reopened.read(box_a)[_mask(box_a, 3)] == 0).all()


@pytest.mark.parametrize("box, shape, label", [
    (Box((0, 0, 0), (2, 2, 2)), (2, 2, 3), 1),      # mask shape differs from the box
    (Box((18, 0, 0), (22, 2, 2)), (4, 2, 2), 1),    # outside the volume
    (Box((0, 0, 0), (2, 2, 2)), (2, 2, 2), 256),    # label out of range
    (Box((0, 0), (2, 2)), (2, 2), 1),               # not 3D
])
def test_bad_mask_edits_are_refused(box, shape, label):
    store = LabelStore(SHAPE)
    with pytest.raises(InvalidRequestError):
        store.paint_mask(box, np.ones(shape, bool), label)
    assert store.revision == 0
