"""``serve --log-format json``: every log line is one JSON object with time, level,
logger and message (checked on a real server process, through its shutdown)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import tifffile

from ilastik_web.server.logformat import JsonFormatter


def test_formatter_fields_and_exceptions():
    record = logging.makeLogRecord({"name": "x", "levelname": "ERROR", "msg": "a %s",
                                    "args": ("b",), "job": "j1"})
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "a b" and entry["level"] == "ERROR" and entry["job"] == "j1"
    assert "ValueError: boom" in entry["exception"] and entry["time"].endswith("Z")


def test_serve_writes_json_lines(tmp_path):
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, np.zeros((4, 32, 32), np.uint8))
    env = {**os.environ, "ILASTIK_WEB_DATA": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", str(volume), "--no-project",
         "--port", "0", "--no-browser", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    lines = [line for line in err.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line parses
    assert any("viewer at" in e["message"] for e in entries)
    assert any("SIGTERM" in e["message"] for e in entries)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
