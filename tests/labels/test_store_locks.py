"""Readers never wait on a writer's disk I/O: label snapshots and project state are
swapped by reference and persisted outside the locks readers could reach."""

from __future__ import annotations

import os
import threading

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.labels import LabelStore, Stroke

DEADLINE_S = 120


def _run_while_blocked(block_target, blocked_call, reader):
    """Run ``blocked_call`` in a thread with ``block_target`` held up until ``reader``
    (run here) has returned; the reader's result, and whether the writer then finished."""
    entered, release = threading.Event(), threading.Event()

    def hold(*args, **kwargs):
        entered.set()
        assert release.wait(DEADLINE_S), "never released"
        return block_target(*args, **kwargs)

    done: list[object] = []
    writer = threading.Thread(target=lambda: done.append(blocked_call(hold)))
    writer.start()
    assert entered.wait(DEADLINE_S), "the writer never reached its I/O"
    try:
        result = reader()  # would wait until the deadline if it took the writer's lock
    finally:
        release.set()
        writer.join(DEADLINE_S)
    return result, bool(done)


def test_snapshot_does_not_wait_for_a_stroke_being_fsynced(tmp_path, monkeypatch):
    store = LabelStore((8, 32, 32), tmp_path / "labels")
    store.paint(Stroke(((2.5, 4.5, 4.5), (2.5, 4.5, 20.5)), radius=1.5, label=1))
    real_fsync = os.fsync

    def paint_with(hold):
        monkeypatch.setattr(os, "fsync", hold)
        try:
            return store.paint(Stroke(((5.5, 10.5, 4.5),), radius=1.5, label=2))
        finally:
            monkeypatch.setattr(os, "fsync", real_fsync)

    whole = Box((0, 0, 0), (8, 32, 32))

    def read():
        seen: list = []
        t = threading.Thread(target=lambda: seen.append(
            (store.revision, store.snapshot().read(whole))))
        t.start()
        t.join(DEADLINE_S)
        assert seen, "the reader waited on the writer"
        return seen[0]

    (revision, labels), finished = _run_while_blocked(real_fsync, paint_with, read)
    assert finished
    # The reader saw the last acknowledged revision, without the stroke still in flight.
    assert revision == 1 and not (labels == 2).any() and (labels == 1).any()
    assert store.revision == 2 and (store.read(whole) == 2).any()


def test_project_state_reads_while_a_classifier_is_pickled(tmp_path, blob_source, blobs,
                                                           monkeypatch):
    from ilastik_web.classify.forest import PixelClassifier
    from ilastik_web.project import Project

    _, truth = blobs
    project = Project.create(tmp_path / "p", blob_source, classes=["a", "b"],
                             selection=[("GaussianSmoothing", 1.0)])
    for label in (1, 2):
        z, y, x = (int(v[0]) for v in np.nonzero(truth == label))
        project.paint(Stroke(((z + 0.5, y + 0.5, x + 0.5),), radius=1.5, label=label))
    project.train()
    real_save = PixelClassifier.save

    def train_with(hold):
        monkeypatch.setattr(PixelClassifier, "save", lambda self, path: hold(self, path))
        try:
            return project.train()
        finally:
            monkeypatch.setattr(PixelClassifier, "save", real_save)

    def read():
        seen: list = []
        t = threading.Thread(target=lambda: seen.append(
            ([c.name for c in project.classes], project.current_generation().number,
             project.generation)))
        t.start()
        t.join(DEADLINE_S)
        assert seen, "reading the project waited on the classifier being written"
        return seen[0]

    (names, number, generation), finished = _run_while_blocked(real_save, train_with, read)
    assert finished and names == ["a", "b"]
    assert number == generation == 1  # the new generation is served once it is on disk
    assert project.generation == 2
    assert (tmp_path / "p" / "classifiers" / "g2.pkl").exists()
