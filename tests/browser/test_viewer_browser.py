"""Headless Chromium opens the viewer and shows the served volume."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PANEL = ".neuroglancer-rendered-data-panel"


def panel_pixels(page, index: int = 0) -> np.ndarray:
    """Grey values of the central half of a data panel."""
    png = page.locator(PANEL).nth(index).screenshot()
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    h, w = grey.shape
    return grey[h // 4: 3 * h // 4, w // 4: 3 * w // 4]


def test_viewer_shows_the_volume(live_server, browser, artifacts):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    chunk_statuses: list[int] = []
    errors: list[str] = []
    page.on("response", lambda r: chunk_statuses.append(r.status)
            if "/precomputed/" in r.url else None)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server.url)

    # wait until the xy panel shows structure (chunks arrived and were drawn)
    deadline = time.monotonic() + 45
    while True:
        page.wait_for_selector(PANEL, timeout=30_000)
        pixels = panel_pixels(page)
        if pixels.std() > 15 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    page.screenshot(path=str(artifacts / "viewer.png"))

    pixels = panel_pixels(page)
    assert pixels.std() > 15, f"xy panel looks blank (std {pixels.std():.1f})"
    assert len(np.unique(pixels.round())) > 50
    assert chunk_statuses and set(chunk_statuses) == {200}, chunk_statuses
    # every panel (xy, xz, yz) draws data, not only the xy one
    assert all(panel_pixels(page, i).std() > 10 for i in (0, 1, 3))
    assert not errors, errors
    body = page.inner_text("body")
    assert "Error" not in body and "Disconnected" not in body

    # the top bar's position widget: dimension names and their physical voxel sizes
    widget = page.locator(".neuroglancer-position-widget").first
    text_of = "els => els.map(e => (e.value || e.textContent).trim())"
    names = widget.locator(".neuroglancer-position-dimension-name").evaluate_all(text_of)
    scales = widget.locator(".neuroglancer-position-dimension-scale").evaluate_all(text_of)
    assert names == ["x", "y", "z"]
    assert scales == ["(8nm)", "(8nm)", "(40nm)"] or scales == ["8nm", "8nm", "40nm"], scales
    page.close()
