"""A real ``ilastik-web serve`` process on a small volume, and headless Chromium."""

from __future__ import annotations

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
    process = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", str(path), "--port", str(port),
         "--no-browser", "--voxel-size", "40,8,8", "--token", "browser-token",
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)} before printing its URL")
        yield LiveServer(url=url, port=port, data=data)
    finally:
        process.terminate()
        process.wait(10)


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
