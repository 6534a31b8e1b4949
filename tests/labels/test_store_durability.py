"""Validate before logging, no partial records on a full disk, bad records skipped on
reopening, checkpoints that keep the undo history."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError, StorageError
from ilastik_web.labels import LabelStore, Stroke
from ilastik_web.labels.store import LOG_NAME

SHAPE = (16, 64, 64)
ALL = Box.from_shape(SHAPE)


def _dot(label, z, y, x, radius=2.0, plane="xy"):
    return Stroke(((z + 0.5, y + 0.5, x + 0.5),), radius=radius, label=label, plane=plane)


def _log_lines(folder):
    return [json.loads(line) for line in (folder / LOG_NAME).read_bytes().splitlines()
            if line.strip()]


@pytest.mark.parametrize("points", [
    ((1e300, 1e300, 1e300),), ((float("nan"), 1.0, 1.0),), ((float("inf"), 1.0, 1.0),),
])
def test_unrepresentable_points_are_refused(points):
    with pytest.raises(InvalidRequestError):
        Stroke(points, radius=2, label=1)


@pytest.mark.parametrize("label", [float("nan"), float("inf"), 1.5, 256, -1, "1", True])
def test_bad_labels_are_refused(label):
    with pytest.raises(InvalidRequestError):
        Stroke(((1.0, 1.0, 1.0),), radius=2, label=label)


def test_a_refused_edit_leaves_no_record_and_burns_no_revision(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_dot(1, 3, 10, 10))
    costly = Stroke(tuple((8.5, 32.5, float(x)) for x in range(0, 64, 8)) * 10,
                    radius=200, label=1, plane="3d")
    with pytest.raises(InvalidRequestError, match="too costly"):
        LabelStore((512, 512, 512)).paint(costly)
    with pytest.raises(InvalidRequestError):
        store.relabel(0, 1)
    assert store.revision == 1
    assert [r["rev"] for r in _log_lines(tmp_path)] == [1]
    assert store.paint(_dot(2, 3, 30, 30)).revision == 2


def test_a_stroke_outside_the_volume_is_a_harmless_empty_edit(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    result = store.paint(Stroke(((1e9, 1e9, 1e9),), radius=2, label=1))
    assert result.box.is_empty
    store.close()
    assert LabelStore(SHAPE, tmp_path).revision == 1


def test_bad_records_are_reported_and_skipped_keeping_the_rest(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_dot(1, 2, 10, 10))
    store.close()
    with open(tmp_path / LOG_NAME, "ab") as f:
        # What older versions could log: unrepresentable points, garbage, a bad undo.
        f.write(b'{"op":"stroke","rev":2,"stroke":{"points":[[1e300,1e300,1e300]],'
                b'"radius":2,"label":1}}\n')
        f.write(b'this is not json\n')
        f.write(b'{"op":"stroke","rev":3,"stroke":{"points":[[2.5,40.5,40.5]],'
                b'"radius":NaN,"label":1}}\n')
    store = LabelStore(SHAPE, tmp_path)
    assert len(store.problems) == 3
    store.paint(_dot(2, 5, 40, 40))
    store.close()
    again = LabelStore(SHAPE, tmp_path)
    labels = again.read(ALL)
    assert labels[2, 10, 10] == 1 and labels[5, 40, 40] == 2


def test_a_torn_tail_is_dropped_so_the_next_record_stands_alone(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_dot(1, 2, 10, 10))
    store.close()
    with open(tmp_path / LOG_NAME, "ab") as f:
        f.write(b'{"op":"stroke","rev":2,"str')  # a crash mid-write
    store = LabelStore(SHAPE, tmp_path)
    assert store.paint(_dot(2, 4, 20, 20)).revision == 2
    store.close()
    again = LabelStore(SHAPE, tmp_path)
    assert again.revision == 2 and again.problems == []
    assert again.read(ALL)[4, 20, 20] == 2


def test_checkpoints_keep_the_undo_history(tmp_path):
    store = LabelStore(SHAPE, tmp_path, checkpoint_every=3)
    for i in range(7):
        store.paint(_dot(1 + i % 2, i, 10 + 5 * i, 10))
    store.undo()
    expected = store.read(ALL)
    store.wait_for_checkpoint()  # automatic checkpoints run in a thread of their own
    assert len(_log_lines(tmp_path)) < 8  # checkpointed along the way
    store.close()
    again = LabelStore(SHAPE, tmp_path)
    assert again.revision == 8
    assert np.array_equal(again.read(ALL), expected)
    again.redo()
    assert again.read(ALL)[6, 40, 10] == 1
    for _ in range(7):
        again.undo()
    assert not again.read(ALL).any() and not again.can_undo


def test_old_edits_fold_into_the_base(tmp_path):
    store = LabelStore(SHAPE, tmp_path, max_undo=2)
    for i in range(5):
        store.paint(_dot(1, i, 10, 10 + 6 * i))
    while store.can_undo:
        store.undo()
    labels = store.read(ALL)
    assert labels[0, 10, 10] == labels[2, 10, 22] == 1
    assert labels[3, 10, 28] == labels[4, 10, 34] == 0


def test_referenced_values_include_history():
    store = LabelStore(SHAPE)
    store.paint(_dot(3, 1, 10, 10))
    store.paint(_dot(7, 1, 30, 30))
    store.relabel(3, 0)
    assert store.referenced_values() == {3, 7}
    assert store.undo().edit.relabel == (3, 0)


def test_full_disk_leaves_no_partial_record_and_no_burnt_revision(small_tmpfs, fill_disk):
    folder = small_tmpfs / "labels"
    store = LabelStore(SHAPE, folder, checkpoint_every=None)
    store.paint(_dot(1, 1, 10, 10))
    acked = {1: store.read(ALL)}
    fillers = fill_disk(small_tmpfs)
    big = Stroke(tuple((2.5, 20.5 + (i % 30), 20.5 + i % 40) for i in range(2000)),
                 radius=1, label=2)
    refused = 0
    for _ in range(5):
        try:
            result = store.paint(big)
        except StorageError:
            refused += 1
            continue
        acked[result.revision] = store.read(ALL)
    assert refused > 0
    # Undo on the full disk: refused, the revision stays (a few bytes may still fit a
    # small record: fill them first).
    with pytest.raises(StorageError):
        for _ in range(1000):
            if store.undo() is None:
                store.redo()
            acked[store.revision] = store.read(ALL)
    revision = store.revision
    size = os.path.getsize(folder / LOG_NAME)
    for path in fillers:
        os.unlink(path)
    result = store.paint(_dot(3, 9, 50, 50))
    assert result.revision == revision + 1
    assert os.path.getsize(folder / LOG_NAME) > size
    acked[result.revision] = store.read(ALL)
    store.close()
    again = LabelStore(SHAPE, folder)
    assert again.problems == []
    assert again.revision == result.revision
    assert np.array_equal(again.read(ALL), acked[result.revision])
    revisions = [r["rev"] for r in _log_lines(folder)]
    assert revisions == sorted(set(revisions))
