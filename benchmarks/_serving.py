"""Helpers the serving benchmarks share: start ``ilastik-web serve``, stop it, fetch JSON."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 120.0


class BenchmarkError(Exception):
    """A benchmark could not run (a server did not start, a request failed)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float, what: str) -> None:
    """Return once ``process`` listens on ``port``; BenchmarkError if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"{what} exited with status {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchmarkError(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Terminate ``process``, killing it if it does not exit within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def ilastik_web_server(location: str, *, workers: int, cache_mb: int) -> Iterator[tuple[str, int]]:
    """Run ``ilastik-web serve LOCATION --no-project``; yields (base URL, server pid)."""
    port = free_port()
    command = [sys.executable, "-m", "ilastik_web", "serve", location, "--no-browser",
               "--no-project", "--port", str(port), "--workers", str(workers),
               "--cache-mb", str(cache_mb), "--log-level", "WARNING"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    try:
        try:
            wait_for_port(port, process, STARTUP_TIMEOUT_S, "ilastik-web serve")
        except BenchmarkError:
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else "?"
            raise BenchmarkError(f"ilastik-web serve {location} failed: {reason}") from None
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)
        log.close()


def get_json(url: str) -> dict:
    async def fetch() -> dict:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            if response.status != 200:
                raise BenchmarkError(f"GET {url}: HTTP {response.status}")
            return await response.json(content_type=None)

    return asyncio.run(fetch())
