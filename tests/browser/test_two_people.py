"""Two people on one project: an annotator and a viewer, each in their own browser context.

A real ``ilastik-web serve --token`` process; the operator (the test, with the token)
makes an annotator link and a viewer link; two Chromium contexts (two browsers: separate
cookies) open them. The annotator paints with the real mouse and both see the stroke;
the viewer's paint attempt is refused with a message in the panel; a stroke of a third
person shows in both; cameras stay independent; revoking the annotator's link stops
their next stroke at once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tifffile
from paint_helpers import drag, screen_points, wait_for
from scipy import ndimage
from server_process import stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "two-people-operator"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, method: str = "GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, object]]:
    folder = tmp_path_factory.mktemp("two-people")
    rng = np.random.default_rng(1)
    blobs = ndimage.gaussian_filter(rng.random((8, 192, 192)), (1, 5, 5))
    data = ((blobs - blobs.min()) / np.ptp(blobs) * 255).astype(np.uint8)
    tifffile.imwrite(folder / "v.tif", data, photometric="minisblack")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", str(folder / "v.tif"), "--port",
         str(port), "--no-browser", "--project", str(folder / "p"), "--token", TOKEN,
         "--voxel-size", "40,8,8", "--log-level", "WARNING", "--allow-root", str(folder)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "ILASTIK_WEB_DATA": str(folder)})
    try:
        if not process.stdout.readline().strip():
            pytest.fail(f"server exited with {process.wait(10)}")
        yield f"http://127.0.0.1:{port}", folder
    finally:
        stop_server(process)


def _open(browser, url: str):
    context = browser.new_context(viewport={"width": 1300, "height": 850})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=90_000)
    return context, page


def _labels_version_seen(page) -> str | None:
    return page.evaluate("""(() => {
      for (const layer of viewer.state.toJSON().layers || []) {
        const s = JSON.stringify(layer.source || "");
        const m = s.match(/-labels\\/([^/"]+)/);
        if (m) return m[1];
      }
      return null;
    })()""")


def _camera(page):
    return page.evaluate("viewer.state.toJSON().position")


def _paint(page, voxels):
    page.evaluate("ilastikWeb.brush.set({paintMode: true})")
    drag(page, screen_points(page, voxels))


@pytest.fixture(scope="module")
def server(served) -> str:
    return served[0]


def test_annotator_and_viewer(server, browser):
    project = _api(server, "/api/projects")["projects"][0]["id"]
    annotator = _api(server, f"/api/projects/{project}/links", "POST", {"role": "annotator"})
    viewer = _api(server, f"/api/projects/{project}/links", "POST", {"role": "viewer"})
    ctx_a, page_a = _open(browser, annotator["url"])
    ctx_v, page_v = _open(browser, viewer["url"])
    try:
        for page, link in ((page_a, annotator), (page_v, viewer)):
            assert link["token"] not in page.url  # traded for the cookie, gone from the URL
            assert "token" not in json.dumps(page.evaluate("viewer.state.toJSON()"))
        # Each sees both people, with roles.
        for page in (page_a, page_v):
            wait_for(lambda p=page: p.locator("#iw-people li").count() == 2, 60,
                     "both people in the People section")
        assert page_a.locator("#iw-people li", has_text="(you)").get_attribute(
            "data-role") == "annotator"
        assert page_v.is_visible("#iw-role-notice")
        assert "View only" in page_v.inner_text("#iw-role-notice")

        centre = _camera(page_a)
        z = centre[2]
        stroke = [[centre[0] - 12 + i * 4, centre[1], z] for i in range(7)]
        # The annotator paints: the labels change, and the viewer's page follows.
        before = _api(server, f"/api/projects/{project}")["label_revision"]
        _paint(page_a, stroke)
        info = wait_for(lambda: (lambda p: p if p["label_revision"] > before else None)(
            _api(server, f"/api/projects/{project}")), 60, "the annotator's stroke")
        version = info["layers"]["labels"]["version"]
        for page in (page_a, page_v):
            wait_for(lambda p=page: _labels_version_seen(p) == version, 60,
                     "the new labels version in both viewers")

        # The viewer tries: refused, with the reason in the panel, and nothing changes.
        revision = info["label_revision"]
        _paint(page_v, [[x, y + 20, zz] for x, y, zz in stroke])
        wait_for(lambda: "needs the annotator role" in page_v.inner_text(".iw-status"), 60,
                 "the refusal in the viewer's status line")
        assert _api(server, f"/api/projects/{project}")["label_revision"] == revision

        # Cameras are independent: the annotator moves; the viewer stays where it was,
        # also after a later push (a third person's stroke) reached it.
        camera_v = _camera(page_v)
        page_a.evaluate("""(() => { const p = viewer.state.toJSON().position;
          viewer.state.children.get("position").restoreState([p[0] + 30, p[1] + 20, p[2]]);
        })()""")
        wait_for(lambda: _camera(page_a) != camera_v, 30, "the annotator's camera moved")
        third = _api(server, f"/api/projects/{project}/strokes", "POST", {
            "points_xyz": [[10.5, 10.5, z]], "radius": 2, "label": 2})
        version = _api(server, f"/api/projects/{project}")["layers"]["labels"]["version"]
        for page in (page_a, page_v):
            wait_for(lambda p=page: _labels_version_seen(p) == version, 60,
                     "the operator's stroke in both viewers")
        assert third["changed"]
        assert _camera(page_v) == camera_v
        assert _camera(page_a) != camera_v

        # Revoked: the annotator's very next stroke is refused.
        _api(server, f"/api/projects/{project}/links/{annotator['id']}", "DELETE")
        revision = _api(server, f"/api/projects/{project}")["label_revision"]
        status = page_a.evaluate(f"""(async () => (await fetch("/api/projects/{project}/strokes",
          {{method: "POST", headers: {{"Content-Type": "application/json"}},
            body: JSON.stringify({{points_xyz: [[20.5, 20.5, {z}]], radius: 2, label: 1}})}}
          )).status)()""")
        assert status == 403
        assert _api(server, f"/api/projects/{project}")["label_revision"] == revision
    finally:
        ctx_a.close()
        ctx_v.close()


def test_start_page_lists_projects_and_creates_one(served, browser):
    base, folder = served
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/?token={TOKEN}")
        assert TOKEN not in page.url and page.url.endswith("/start")
        page.wait_for_selector("#projects li a")
        listed = page.locator("#projects li a").all_inner_texts()
        assert listed == [p["id"] for p in _api(base, "/api/projects")["projects"]]
        page.fill("#new-id", "made-in-browser")
        page.fill("#new-source", str(folder / "nowhere.tif"))
        page.click("#new-create")
        wait_for(lambda: page.inner_text("#error"), 30, "the error for a missing file")
        page.fill("#new-source", str(folder / "v.tif"))
        page.click("#new-create")
        page.wait_for_url("**/v/main/?project=made-in-browser", timeout=60_000)
        page.wait_for_function("window.ilastikWeb && ilastikWeb.ready", timeout=90_000)
        assert page.evaluate("ilastikWeb.project.id") == "made-in-browser"
        assert "made-in-browser" in [p["id"] for p in _api(base, "/api/projects")["projects"]]
    finally:
        context.close()
