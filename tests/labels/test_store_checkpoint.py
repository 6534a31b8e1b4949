"""Checkpoints never hold the edit lock across the disk, and lose no edit made meanwhile."""

from __future__ import annotations

import os
import threading

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.labels import LabelStore, Stroke
from ilastik_web.labels import store as store_module
from ilastik_web.labels.store import CHECKPOINT_NAME, LOG_NAME

SHAPE = (16, 64, 64)
ALL = Box.from_shape(SHAPE)
DEADLINE_S = 120


def _dot(label, z, y=10, x=10):
    return Stroke(((z + 0.5, y + 0.5, x + 0.5),), radius=2.0, label=label)


def _checkpoint_in_thread(store):
    errors: list[BaseException] = []

    def run():
        try:
            store.checkpoint()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_edits_are_acknowledged_while_the_checkpoint_file_is_written(tmp_path, monkeypatch):
    store = LabelStore(SHAPE, tmp_path, checkpoint_every=None)
    store.paint(_dot(1, 1))
    writing, resume = threading.Event(), threading.Event()
    write = store._write_checkpoint

    def slow_write(*args):
        writing.set()
        assert resume.wait(DEADLINE_S)
        write(*args)

    monkeypatch.setattr(store, "_write_checkpoint", slow_write)
    thread, errors = _checkpoint_in_thread(store)
    try:
        assert writing.wait(DEADLINE_S)
        # The checkpoint is stuck on the disk; edits and readers do not wait for it.
        assert store.paint(_dot(2, 3)).revision == 2
        assert store.undo().revision == 3
        assert store.redo().revision == 4
        assert store.history()[0][-1].revision == 2
    finally:
        resume.set()
        thread.join(DEADLINE_S)
    assert not errors
    expected = store.read(ALL)
    store.close()
    again = LabelStore(SHAPE, tmp_path)
    assert again.revision == 4 and np.array_equal(again.read(ALL), expected)
    assert again.can_undo


def test_an_edit_before_the_new_log_is_durable_is_in_both_logs(tmp_path, monkeypatch):
    """Whichever log a crash leaves under the name holds every acknowledged edit."""
    store = LabelStore(SHAPE, tmp_path, checkpoint_every=None)
    store.paint(_dot(1, 1))
    os.link(tmp_path / LOG_NAME, tmp_path / "old.log")  # the old log's inode, kept
    renamed, resume = threading.Event(), threading.Event()
    fsync_dir = store_module._fsync_dir
    calls = []

    def slow_fsync_dir(path):
        calls.append(path)
        if len(calls) == 2:  # the second: after the new log's rename
            renamed.set()
            assert resume.wait(DEADLINE_S)
        fsync_dir(path)

    monkeypatch.setattr(store_module, "_fsync_dir", slow_fsync_dir)
    thread, errors = _checkpoint_in_thread(store)
    try:
        assert renamed.wait(DEADLINE_S)
        assert store.paint(_dot(2, 5)).revision == 2
    finally:
        resume.set()
        thread.join(DEADLINE_S)
    assert not errors
    assert store.paint(_dot(3, 7)).revision == 3  # after: the new log only
    expected = store.read(ALL)
    store.close()
    new_log = (tmp_path / LOG_NAME).read_bytes()
    old_log = (tmp_path / "old.log").read_bytes()
    assert b'"rev":2' in new_log and b'"rev":2' in old_log
    assert b'"rev":1' not in new_log and b'"rev":3' not in old_log
    # A crash that lost the rename: the checkpoint and the old log.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / CHECKPOINT_NAME).write_bytes((tmp_path / CHECKPOINT_NAME).read_bytes())
    (crashed / LOG_NAME).write_bytes(old_log)
    lost_rename = LabelStore(SHAPE, crashed)
    assert lost_rename.revision == 2 and lost_rename.read(ALL)[5, 10, 10] == 2
    again = LabelStore(SHAPE, tmp_path)
    assert again.revision == 3 and np.array_equal(again.read(ALL), expected)


def test_automatic_checkpoints_do_not_delay_the_edit_that_triggers_them(tmp_path,
                                                                        monkeypatch):
    store = LabelStore(SHAPE, tmp_path, checkpoint_every=2)
    writing, resume = threading.Event(), threading.Event()
    write = store._write_checkpoint

    def slow_write(*args):
        writing.set()
        assert resume.wait(DEADLINE_S)
        write(*args)

    monkeypatch.setattr(store, "_write_checkpoint", slow_write)
    try:
        store.paint(_dot(1, 1))
        store.paint(_dot(1, 2))  # the second record: a checkpoint starts, in a thread
        assert writing.wait(DEADLINE_S)
        assert store.paint(_dot(2, 3)).revision == 3  # not stuck behind it
    finally:
        resume.set()
    store.wait_for_checkpoint()
    expected = store.read(ALL)
    store.close()
    again = LabelStore(SHAPE, tmp_path)
    assert again.revision == 3 and np.array_equal(again.read(ALL), expected)
