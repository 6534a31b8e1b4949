"""Stopping the server processes the browser tests start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

#: How long a server may take to stop on SIGTERM (it closes its projects, which flushes
#: their label logs); longer is a failure of the test, and the process is killed.
STOP_TIMEOUT_S = 60


def log_tail(log: Path, chars: int = 4000) -> str:
    try:
        return log.read_text()[-chars:]
    except OSError:
        return "(no log)"


def stop_server(process: subprocess.Popen, log: Path | None = None) -> None:
    """SIGTERM, then wait; a server that does not stop is killed and the test fails."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        tail = f"; its log ends:\n{log_tail(log)}" if log is not None else ""
        pytest.fail(f"the server did not stop within {STOP_TIMEOUT_S} s of SIGTERM{tail}")
