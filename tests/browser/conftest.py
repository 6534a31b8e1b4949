"""A real ``ilastik-web serve`` process on a small volume, and headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from server_process import log_tail, stop_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class LiveServer:
    url: str
    port: int
    data: np.ndarray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """The CLI serving smooth random blobs (16 x 256 x 320, uint8) with a token."""
    rng = np.random.default_rng(0)
    blobs = ndimage.gaussian_filter(rng.random((16, 256, 320)), (1, 6, 6))
    data = ((blobs - blobs.min()) / np.ptp(blobs) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("browser") / "blobs.tif"
    tifffile.imwrite(path, data)
    port = _free_port()
    log = path.parent / "server.log"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ilastik_web", "serve", str(path), "--port", str(port),
             "--no-browser", "--voxel-size", "40,8,8", "--token", "browser-token",
             "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
    try:
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)}: {log_tail(log)}")
        yield LiveServer(url=url, port=port, data=data)
    finally:
        stop_server(process, log)


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@dataclass
class DemoServer:
    url: str
    base: str
    project_dir: Path
    labels_path: Path
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (stderr), for failure messages."""
        return log_tail(self.log, chars)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """A cache folder holding the built-in demo, generated once per test session (~45 s)."""
    from ilastik_web.demo import ensure_demo

    cache = tmp_path_factory.mktemp("demo-cache")
    ensure_demo(cache)
    return cache


@pytest.fixture
def demo_server(demo_cache, tmp_path) -> Iterator[DemoServer]:
    """``ilastik-web serve --no-browser`` on the demo, with a fresh (empty) demo project."""
    from ilastik_web.demo import ensure_demo

    demo = ensure_demo(demo_cache)
    project_dir = demo.raw_path.parent / "demo-project"
    shutil.rmtree(project_dir, ignore_errors=True)
    port = _free_port()
    env = {**os.environ, "ILASTIK_WEB_CACHE": str(demo_cache)}
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ilastik_web", "serve", "--port", str(port), "--no-browser",
             "--log-level", "INFO", "--workers", "4"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )
    try:
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)}: {log_tail(log)}")
        yield DemoServer(url=url, base=f"http://127.0.0.1:{port}", project_dir=project_dir,
                         labels_path=demo.labels_path, log=log)
    finally:
        stop_server(process, log)


class Served:
    """A running server: its process, viewer URL, base URL and log file."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process, self.url, self.log = process, url, log
        self.base = url.split("/v/")[0]

    def log_text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def serve(tmp_path) -> Iterator:
    """``serve(*paths_and_options, project=False)`` starts ``ilastik-web serve`` (with a
    project in a fresh folder when ``project``) and returns a :class:`Served`; its stderr
    (the log) goes to a file."""
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(*args: str, project: bool = False) -> Served:
        port = _free_port()
        log = tmp_path / f"server-{port}.log"
        with open(log, "w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "ilastik_web", "serve", *args, "--port", str(port),
                 "--no-browser", *([] if project else ["--no-project"]),
                 "--project", str(tmp_path / f"project-{port}"), "--log-level", "WARNING"],
                stdout=subprocess.PIPE, stderr=err, text=True,
                env={**os.environ, "ILASTIK_WEB_DATA": str(tmp_path / "data")},
            )
        started.append((process, log))
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)}: {log.read_text()[-2000:]}")
        return Served(process, url, log)

    yield start
    for process, log in started:
        stop_server(process, log)
