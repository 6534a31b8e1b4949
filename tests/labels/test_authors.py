"""Strokes record their author; undo and redo by an author act on that author's edits."""

from __future__ import annotations

import json
import threading

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.labels import Stroke
from ilastik_web.labels.store import LOG_NAME, LabelStore

SHAPE = (4, 32, 32)


def _stroke(x, label, y=8.5, radius=3.0):
    return Stroke(points=((1.5, y, x),), radius=radius, label=label)


def test_author_is_logged_and_replayed(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_stroke(8.5, 1), author="alice")
    store.paint(_stroke(20.5, 2), author="bob")
    store.close()
    records = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert [r.get("author") for r in records] == ["alice", "bob"]
    reopened = LabelStore(SHAPE, tmp_path)
    assert reopened.can_undo_by("alice") and reopened.can_undo_by("bob")
    assert not reopened.can_undo_by("carol")


def test_undo_takes_back_only_the_authors_own_stroke(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_stroke(8.5, 1), author="alice")
    store.paint(_stroke(20.5, 2), author="bob")  # later, elsewhere
    both = store.read(Box.from_shape(SHAPE))
    result = store.undo("alice")
    assert result is not None
    after = store.read(Box.from_shape(SHAPE))
    assert not (after == 1).any()
    np.testing.assert_array_equal(after == 2, both == 2)  # bob's stroke stays
    assert store.undo("alice") is None
    store.redo("alice")
    np.testing.assert_array_equal(store.read(Box.from_shape(SHAPE)), both)
    store.undo("alice")
    store.close()
    # replay of the log gives the same labels
    reopened = LabelStore(SHAPE, tmp_path)
    np.testing.assert_array_equal(reopened.read(Box.from_shape(SHAPE)), after)
    assert reopened.can_redo_by("alice") and not reopened.can_redo_by("bob")


def test_undo_under_a_later_overlapping_stroke_keeps_the_later_one(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_stroke(10.5, 1, radius=4), author="alice")
    store.paint(_stroke(12.5, 2, radius=2), author="bob")  # on top of alice's
    bob_only = LabelStore(SHAPE)
    bob_only.paint(_stroke(12.5, 2, radius=2))
    store.undo("alice")
    np.testing.assert_array_equal(store.read(Box.from_shape(SHAPE)),
                                  bob_only.read(Box.from_shape(SHAPE)))


def test_a_new_stroke_ends_only_its_authors_redo(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_stroke(8.5, 1), author="alice")
    store.paint(_stroke(20.5, 2), author="bob")
    store.undo("alice")
    store.undo("bob")
    store.paint(_stroke(4.5, 1), author="bob")
    assert store.can_redo_by("alice") and not store.can_redo_by("bob")


def test_concurrent_strokes_last_acknowledged_wins_and_the_log_keeps_both(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    results = {}
    barrier = threading.Barrier(2)

    def paint(author, label):
        barrier.wait()
        results[author] = store.paint(_stroke(16.5, label), author=author)

    threads = [threading.Thread(target=paint, args=(a, v)) for a, v in (("a", 1), ("b", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last = max(results, key=lambda a: results[a].revision)
    expected = {"a": 1, "b": 2}[last]
    assert store.read(Box.from_shape(SHAPE))[1, 8, 16] == expected
    store.close()
    records = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert sorted(r["author"] for r in records) == ["a", "b"]
    assert LabelStore(SHAPE, tmp_path).read(Box.from_shape(SHAPE))[1, 8, 16] == expected


def test_without_author_undo_is_the_latest_edit_as_before():
    store = LabelStore(SHAPE)
    store.paint(_stroke(8.5, 1), author="alice")
    store.paint(_stroke(20.5, 2), author="bob")
    store.undo()
    assert not (store.read(Box.from_shape(SHAPE)) == 2).any()
