"""SIGTERM (how systemd stops the service) shuts the server down cleanly: exit status
0 after the app's cleanup closed the projects, and every painted stroke is there after
a restart."""

from __future__ import annotations

import json
import signal

import numpy as np
import tifffile
from test_crash_safety import SHAPE, _get, _post, _start


def test_sigterm_exits_cleanly_and_keeps_labels(tmp_path):
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, np.random.default_rng(0).integers(0, 4000, SHAPE, dtype=np.uint16))
    project_dir = tmp_path / "proj"
    proc, base = _start(tmp_path, volume, project_dir)
    try:
        revisions = [_post(base, "/api/projects/proj/strokes", {
            "points_xyz": [[10.5 + 5 * i, 10.5, 2.5], [10.5 + 5 * i, 60.5, 2.5]],
            "radius": 1.0, "label": 1 + i % 2})["revision"] for i in range(4)]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    assert code == 0  # Python's default for SIGTERM would be -15, skipping cleanup
    proc, base = _start(tmp_path, volume, project_dir)
    try:
        project = json.loads(_get(base, "/api/projects/proj"))
        assert project["label_revision"] >= revisions[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
