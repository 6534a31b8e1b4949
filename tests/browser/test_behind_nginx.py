"""The viewer through the shipped nginx site (openstack/nginx/ilastik-web.conf): TLS with
a self-signed certificate, the server under /ilastik/, on loopback ports. Real Chromium
loads the viewer through the proxy, paints two classes and sees the predictions."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import test_paint as paint
from nginx_site import SITE, make_certificate, nginx_main_conf, render_site
from paint_helpers import panel_image, wait_for, xy_panel_box

from ilastik_web.abc import Box
from ilastik_web.sources import open_source

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PREFIX = "/ilastik"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxied(demo_server, tmp_path):
    """nginx with the shipped site in front of ``demo_server``; yields its https base."""
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/install-system-deps.sh)")
    cert, key = make_certificate(tmp_path)
    upstream = int(urllib.parse.urlsplit(demo_server.base).port)
    http_port, https_port = _free_port(), _free_port()
    site = tmp_path / "site.conf"
    site.write_text(render_site(SITE.read_text(), cert=cert, key=key, http_port=http_port,
                                https_port=https_port, upstream_port=upstream))
    conf = nginx_main_conf(tmp_path, site)
    process = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g",
                                "daemon off;"], stderr=subprocess.PIPE, text=True)
    base = f"https://127.0.0.1:{https_port}{PREFIX}"
    try:
        context = ssl.create_default_context(cafile=str(cert))

        def up():
            try:
                with urllib.request.urlopen(base + "/api/health", context=context,
                                            timeout=10) as response:
                    return response.status == 200
            except OSError:
                assert process.poll() is None, process.stderr.read()
                return False

        wait_for(up, 60, "nginx answering for the server")
        yield base, context
    finally:
        process.terminate()
        process.wait(30)


def _api(base, context, path):
    with urllib.request.urlopen(base + path, context=context, timeout=30) as response:
        return json.loads(response.read())


def test_viewer_paint_and_predictions_through_nginx(demo_server, proxied, browser):
    base, context = proxied
    parts = urllib.parse.urlsplit(demo_server.url)
    url = base + parts.path + (f"?{parts.query}" if parts.query else "")
    context_ = browser.new_context(ignore_https_errors=True,
                                   viewport={"width": 1400, "height": 900})
    failed: list[str] = []
    context_.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                if r.status >= 400 else None)
    page = context_.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # 412: the state protocol's "stale base" reply. 410: a label version superseded
    # while the viewer was still opening it (the viewer then follows the newer one).
    page.on("console", lambda m: errors.append(f"{m.text} {m.location.get('url')}")
            if m.type == "error" and "412 (Precondition Failed)" not in m.text
            and "status of 410" not in m.text else None)
    page.goto(url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=90_000)
    # Layer sources point through the proxy: https, the outside host, the prefix.
    sources = page.evaluate("viewer.state.toJSON().layers.map((l) => JSON.stringify(l.source))")
    assert sources and all(f"https://127.0.0.1:{urllib.parse.urlsplit(base).port}{PREFIX}/"
                           in s for s in sources), sources

    page.evaluate(f"""(() => {{
      viewer.layerManager.managedLayers.find((m) => m.name === "ground truth").setVisible(false);
      viewer.state.children.get("crossSectionScale").restoreState({paint.ZOOM});
      viewer.state.children.get("layout").restoreState("xy");
    }})()""")
    panel_index = page.evaluate(f"""Array.from(document.querySelectorAll("{paint.PANEL}"))
      .indexOf(ilastikWeb.ng.panels().find((p) => p.sliceView !== undefined &&
                                               ilastikWeb.ng.planeOf(p) === "xy").element)""")
    box = xy_panel_box(page)
    wait_for(lambda: panel_image(page, panel_index).std() > 10, 90, "the raw data drawn")
    centre = page.evaluate("viewer.state.toJSON().position")
    z = int(np.floor(centre[2]))
    truth = open_source(str(demo_server.labels_path)).base.read(
        Box((z, 0, 0), (z + 1, 512, 512)))[0, 0]
    half = int(min(box["width"], box["height"]) * paint.ZOOM / 2) - 12
    cx, cy = int(centre[0]), int(centre[1])
    window = (cx - half, cx + half, cy - half, cy + half)

    page.keyboard.press("p")
    page.keyboard.press("BracketLeft")
    page.keyboard.press("BracketLeft")
    page.keyboard.press("Shift+Digit3")
    paint._drag_voxels(page, paint._plan_stroke(truth, 3, centre[2], window))
    page.keyboard.press("Shift+Digit1")
    paint._drag_voxels(page, paint._plan_stroke(truth, 1, centre[2], window))
    wait_for(lambda: _api(base, context, f"/api/projects/{paint.PROJECT}")["label_revision"]
             >= 2, 60, "both strokes stored through the proxy")
    wait_for(lambda: page.evaluate("ilastikWeb.brush.pending.length === 0"), 60,
             "the overlay strokes replaced by the labels layer")
    before = panel_image(page, panel_index)
    wait_for(lambda: _api(base, context, f"/api/projects/{paint.PROJECT}")["generation"] >= 1,
             180, "the first classifier generation")

    def changed_fraction() -> float:
        return float((np.abs(panel_image(page, panel_index) - before).max(axis=-1) > 30)
                     .mean())

    wait_for(lambda: changed_fraction() > 0.3, 180, "the predictions drawn in the xy panel")
    time.sleep(0.5)  # let the screenshot show settled tiles (not part of any assertion)
    assert page.evaluate("document.getElementById('iw-training').dataset.generation") != "0"
    assert not errors, (errors, failed)
    assert all(" 410 " not in f" {f} " or "-labels/r" in f for f in failed), failed
    page.close()
