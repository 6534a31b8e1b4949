import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.labels import LabelStore, Stroke

SHAPE = (20, 70, 70)


def _line(label, z, y0, y1, radius=2.0, plane="xy"):
    return Stroke(((z + 0.5, y0, 10.5), (z + 0.5, y1, 60.5)), radius=radius, label=label,
                  plane=plane)


def test_paint_read_and_counts(tmp_path):
    store = LabelStore(SHAPE, tmp_path, block_shape=(8, 32, 32))
    result = store.paint(_line(1, 3, 5.5, 5.5))
    assert result.revision == 1
    labels = store.read(Box.from_shape(SHAPE))
    assert set(np.unique(labels)) == {0, 1}
    assert labels[3].sum() > 0 and labels[4].sum() == 0
    assert store.snapshot().counts()[1] == (labels == 1).sum()


def test_eraser_and_overwrite():
    store = LabelStore(SHAPE)
    store.paint(_line(1, 3, 20.5, 20.5, radius=4))
    store.paint(_line(2, 3, 20.5, 20.5, radius=2))
    store.paint(Stroke(((3.5, 20.5, 35.5),), radius=3, label=0))
    labels = store.read(Box.from_shape(SHAPE))
    assert (labels == 2).any() and (labels == 1).any()
    assert labels[3, 19:22, 34:37].max() == 0


def test_undo_redo_restore_exact_states(tmp_path):
    store = LabelStore(SHAPE, tmp_path, block_shape=(8, 32, 32))
    states = [store.read(Box.from_shape(SHAPE))]
    strokes = [_line(1, 2, 8.5, 40.5), _line(2, 2, 30.5, 30.5, radius=5), _line(0, 2, 8.5, 8.5)]
    for stroke in strokes:
        store.paint(stroke)
        states.append(store.read(Box.from_shape(SHAPE)))
    store.relabel(2, 3)
    states.append(store.read(Box.from_shape(SHAPE)))
    for expected in reversed(states[:-1]):
        store.undo()
        assert np.array_equal(store.read(Box.from_shape(SHAPE)), expected)
    assert store.undo() is None
    for expected in states[1:]:
        store.redo()
        assert np.array_equal(store.read(Box.from_shape(SHAPE)), expected)
    assert store.redo() is None


def test_reopen_replays_log_and_checkpoint(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_line(1, 1, 5.5, 50.5))
    store.checkpoint()
    store.paint(_line(2, 4, 30.5, 30.5))
    store.paint(_line(3, 6, 40.5, 40.5))
    store.undo()
    expected = store.read(Box.from_shape(SHAPE))
    revision = store.revision
    store.close()
    again = LabelStore(SHAPE, tmp_path)
    assert again.revision == revision
    assert np.array_equal(again.read(Box.from_shape(SHAPE)), expected)
    again.redo()
    assert (again.read(Box.from_shape(SHAPE)) == 3).any()


def test_snapshot_is_isolated_from_later_edits():
    store = LabelStore(SHAPE)
    store.paint(_line(1, 3, 5.5, 5.5))
    snap = store.snapshot()
    before = snap.read(Box.from_shape(SHAPE))
    store.paint(_line(2, 3, 5.5, 5.5, radius=6))
    assert np.array_equal(snap.read(Box.from_shape(SHAPE)), before)


def test_torn_last_line_is_ignored(tmp_path):
    store = LabelStore(SHAPE, tmp_path)
    store.paint(_line(1, 1, 5.5, 50.5))
    store.close()
    with open(tmp_path / "edits.log", "ab") as f:
        f.write(b'{"op":"stroke","rev":2,"str')
    again = LabelStore(SHAPE, tmp_path)
    assert again.revision == 1


def test_acknowledged_strokes_survive_kill_9(tmp_path):
    """A child paints and acknowledges strokes on stdout; SIGKILL it mid-stream."""
    script = textwrap.dedent(f"""
        import sys
        from ilastik_web.labels import LabelStore, Stroke
        store = LabelStore({SHAPE}, {str(tmp_path)!r}, block_shape=(8, 32, 32))
        i = 0
        while True:
            z = i % {SHAPE[0]}
            store.paint(Stroke(((z + 0.5, (i * 7) % 60 + 5.5, 5.5), (z + 0.5, 30.5, 60.5)),
                               radius=1.5, label=i % 3 + 1))
            print(i, flush=True)
            i += 1
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = -1
    assert child.stdout is not None
    for line in child.stdout:
        acked = int(line)
        if acked >= 40:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reopened = LabelStore(SHAPE, tmp_path, block_shape=(8, 32, 32))
    assert reopened.revision >= acked + 1
    replay = LabelStore(SHAPE, block_shape=(8, 32, 32))
    for i in range(reopened.revision):
        z = i % SHAPE[0]
        replay.paint(Stroke(((z + 0.5, (i * 7) % 60 + 5.5, 5.5), (z + 0.5, 30.5, 60.5)),
                            radius=1.5, label=i % 3 + 1))
    assert np.array_equal(reopened.read(Box.from_shape(SHAPE)), replay.read(Box.from_shape(SHAPE)))


@pytest.mark.parametrize("bad", [(0, 1), (1, 256)])
def test_relabel_validates(bad):
    with pytest.raises(ValueError):
        LabelStore(SHAPE).relabel(*bad)
