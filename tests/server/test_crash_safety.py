"""Strokes the server acknowledged survive ``kill -9`` of the server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tifffile

SHAPE = (12, 96, 80)


def _start(tmp_path, volume, project):
    env = {**os.environ, "ILASTIK_WEB_DATA": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", str(volume), "--project", str(project),
         "--port", "0", "--no-browser", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), f"server did not start: {url!r}"
    return proc, url.split("/v/")[0]


def _post(base, path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return response.read()


@pytest.mark.slow
def test_acknowledged_strokes_survive_kill_9(tmp_path):
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, np.random.default_rng(0).integers(0, 4000, SHAPE, dtype=np.uint16))
    project_dir = tmp_path / "proj"
    proc, base = _start(tmp_path, volume, project_dir)
    acked: list[tuple[int, dict]] = []
    stop = threading.Event()

    def painter() -> None:
        i = 0
        while not stop.is_set():
            z = i % SHAPE[0]
            stroke = {"points_xyz": [[5.5 + i % 60, 10.5, z + 0.5], [5.5 + i % 60, 80.5, z + 0.5]],
                      "radius": 1.0, "label": 1 + i % 2}
            try:
                result = _post(base, "/api/projects/proj/strokes", stroke)
            except (urllib.error.URLError, ConnectionError, OSError):
                return  # the server died under us: this stroke was never acknowledged
            acked.append((result["revision"], stroke))
            i += 1

    thread = threading.Thread(target=painter)
    thread.start()
    while len(acked) < 25:
        thread.join(0.05)
        assert thread.is_alive() or len(acked) >= 25, "painter stopped early"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    thread.join()

    proc, base = _start(tmp_path, volume, project_dir)
    try:
        project = json.loads(_get(base, "/api/projects/proj"))
        last_acked = acked[-1][0]
        assert project["label_revision"] >= last_acked
        version = project["layers"]["labels"]["version"]
        # Every acknowledged stroke's voxels carry its label (strokes i < 60 never overlap,
        # and the one in flight at the kill, persisted or not, paints a column of its own).
        final: dict[tuple[int, int], int] = {}
        for _, stroke in acked:
            x0, _, z0 = stroke["points_xyz"][0]
            final[(int(z0), int(x0))] = stroke["label"]
        chunks = {}
        for z in range(SHAPE[0]):
            body = _get(base, f"/precomputed/proj-labels/{version}/s0/"
                              f"0-{SHAPE[2]}_0-{SHAPE[1]}_{z}-{z + 1}")
            chunks[z] = np.frombuffer(body, np.uint8).reshape(SHAPE[1], SHAPE[2])
        for (z, x), label in final.items():
            assert chunks[z][45, x] == label, (z, x)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
