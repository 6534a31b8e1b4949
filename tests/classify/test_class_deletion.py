"""Class deletion is one undoable edit across labels and classes; values are never reused
while labels or history refer to them; all 255 values in use is an error, not a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels import Stroke
from ilastik_web.project import PROJECT_FILE, Project


def _paint(project, label, z, y):
    return project.paint(Stroke(((z + 0.5, y + 0.5, 10.5), (z + 0.5, y + 0.5, 40.5)),
                                radius=2, label=label))


def _values(project):
    return [c.value for c in project.classes]


def test_undo_of_a_deletion_brings_back_the_class_with_its_labels(tmp_path, blob_source):
    project = Project.create(tmp_path / "p", blob_source, classes=["a", "b", "c"])
    _paint(project, 2, 3, 20)
    everything = Box.from_shape(project.source.base.shape)
    before = project.labels.read(everything)
    project.remove_class(2)
    assert _values(project) == [1, 3]
    assert not (project.labels.read(everything) == 2).any()
    # Value 2 is still referred to by the history: a new class must not take it.
    assert project.add_class("d").value == 4
    project.undo()  # the deletion is the latest label edit
    assert _values(project) == [1, 2, 3, 4]
    assert project.classes[1].name == "b"
    assert np.array_equal(project.labels.read(everything), before)
    project.redo()
    assert _values(project) == [1, 3, 4]
    project.close()
    again = Project.open(tmp_path / "p", source=blob_source)
    assert _values(again) == [1, 3, 4]
    again.undo()
    assert _values(again) == [1, 2, 3, 4]


def test_a_deletion_belongs_to_its_author_undo(blob_source):
    """The author who deleted a class undoes it with their own undo; another author's undo
    takes back their own stroke and leaves the deletion alone."""
    project = Project.create(None, blob_source, classes=["a", "b", "c"])
    project.paint(Stroke(((3.5, 20.5, 10.5), (3.5, 20.5, 40.5)), radius=2, label=1),
                  author="bob")
    project.remove_class(2, author="alice")
    assert project.labels.can_undo_by("alice")
    project.undo("bob")
    assert _values(project) == [1, 3]
    project.undo("alice")
    assert _values(project) == [1, 2, 3]
    # Bob's redo history survives Alice's deletion; hers is hers.
    project.redo("alice")
    assert _values(project) == [1, 3]
    assert project.labels.can_redo_by("bob")


def test_all_values_in_use_is_an_error(blob_source):
    project = Project.create(None, blob_source, classes=[f"c{i}" for i in range(255)])
    with pytest.raises(InvalidRequestError, match="255"):
        project.add_class("one too many")


def test_a_crash_between_label_edit_and_metadata_is_completed_on_reopening(
        tmp_path, blob_source):
    # The label edit is logged first; project.json still lists the class, as after a
    # kill -9 between the two writes.
    project = Project.create(tmp_path / "p", blob_source, classes=["a", "b"])
    _paint(project, 2, 3, 20)
    saved = (tmp_path / "p" / PROJECT_FILE).read_text()
    project.remove_class(2)
    project.close()
    (tmp_path / "p" / PROJECT_FILE).write_text(saved)
    again = Project.open(tmp_path / "p", source=blob_source)
    assert _values(again) == [1]
    assert json.loads((tmp_path / "p" / PROJECT_FILE).read_text())["classes"][0]["value"] == 1
    assert not (again.labels.read(Box.from_shape(again.source.base.shape)) == 2).any()


@pytest.mark.slow
def test_kill_9_during_deletes_never_leaves_half(tmp_path):
    """Delete classes in a child process and SIGKILL it at random points; on reopening
    a class is either gone with its labels or present with them."""
    rng = np.random.default_rng(0)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {os.getcwd()!r})
        from ilastik_web.sources.array import ArrayVolume
        from ilastik_web.abc import MultiscaleVolume
        from ilastik_web.labels import Stroke
        from ilastik_web.project import Project
        source = MultiscaleVolume("v", [ArrayVolume(np.zeros((1, 8, 64, 64), np.uint8),
                                                    (1.0, 1.0, 1.0))])
        project = Project.open(sys.argv[1], source=source)
        print("ready", flush=True)
        for cls in project.classes:
            project.remove_class(cls.value)
        print("done", flush=True)
    """)
    from ilastik_web.abc import MultiscaleVolume
    from ilastik_web.sources.array import ArrayVolume

    source = MultiscaleVolume("v", [ArrayVolume(np.zeros((1, 8, 64, 64), np.uint8),
                                                (1.0, 1.0, 1.0))])
    for trial in range(12):
        folder = tmp_path / f"p{trial}"
        project = Project.create(folder, source, classes=[f"c{i}" for i in range(6)])
        for value in range(1, 7):
            _paint(project, value, value, 8 * value)
        project.close()
        child = subprocess.Popen([sys.executable, "-c", script, str(folder)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        delay = rng.uniform(0, 0.05)
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        again = Project.open(folder, source=source)
        labels = again.labels.read(Box.from_shape(source.base.shape))
        present = set(np.unique(labels)) - {0}
        assert present == set(_values(again)), trial
        again.close()
