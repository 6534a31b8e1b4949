"""``ilastik-web serve --ilp`` in the real viewer: the imported project's classes and
ilastik's forest are there, and the Export section downloads an .ilp and writes the labels
as OME-Zarr (headless Chromium, real clicks, the real CLI)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from server_process import stop_server

from ilastik_web.ilp import read_ilp

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

API_ZIP = (Path(__file__).resolve().parents[2].parent / "shared" / "ilp-fixtures"
           / "ilastik-api-projects" / "api_projects.zip")


@pytest.fixture(scope="module")
def ilp_server(tmp_path_factory):
    if not API_ZIP.exists():
        pytest.skip(f"ilastik fixture {API_ZIP} absent (the shared ilp-fixtures folder)")
    folder = tmp_path_factory.mktemp("ilp-serve")
    with zipfile.ZipFile(API_ZIP) as archive:
        archive.extractall(folder)
    port = _free_port()
    project_dir = folder / "project"
    process = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", "--ilp", str(folder / "PixelClass3D.ilp"),
         "--project", str(project_dir), "--port", str(port), "--no-browser",
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)} before printing its URL")
        yield url, project_dir
    finally:
        stop_server(process)


def test_serve_ilp_and_export_from_the_panel(ilp_server, browser, tmp_path, artifacts):
    url, project_dir = ilp_server
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready", timeout=60_000)
    classes = page.evaluate("ilastikWeb.project.classes.map((c) => c.name)")
    assert classes == ["Label 1", "Label 2"]
    assert page.evaluate("ilastikWeb.project.info.generation") == 1  # ilastik's forest

    with page.expect_download(timeout=60_000) as download:
        page.click("#iw-export-ilp")
    saved = tmp_path / "from-panel.ilp"
    download.value.save_as(saved)
    assert download.value.suggested_filename.endswith(".ilp")
    ilp = read_ilp(saved)
    assert ilp.class_names == ["Label 1", "Label 2"]
    assert sum(int((b.data > 0).sum()) for b in ilp.label_blocks[0]) == 60

    page.click("#iw-export-labels")
    page.wait_for_function("document.getElementById('iw-export-result').textContent"
                           ".startsWith('labels written to ')", timeout=60_000)
    written = page.inner_text("#iw-export-result").removeprefix("labels written to ")
    assert Path(written).parent == project_dir / "exports"
    label = json.loads((Path(written) / "labels" / "annotations" / ".zattrs").read_text())
    assert label["image-label"]["properties"][0] == {"label-value": 1, "class": "Label 1"}
    page.screenshot(path=str(artifacts / "ilp-export-panel.png"))
    assert not errors, errors
    page.close()
