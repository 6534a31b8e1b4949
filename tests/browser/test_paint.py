"""Painting in the real viewer: headless Chromium, real mouse events, the real CLI on the demo.

Paint two classes with drags in the xy panel, check the labels landed under the drag,
wait for the classifier's predictions to appear on screen without moving the view, undo
the last stroke, and keep screenshots (test-artifacts/, and downscaled into docs/images/
when ILASTIK_WEB_UPDATE_DOCS=1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from paint_helpers import (
    PANEL,
    api,
    distance_to_path,
    drag,
    label_slice,
    longest_run,
    panel_image,
    save_for_docs,
    screen_points,
    voxels_under,
    wait_for,
    xy_panel_box,
)

from ilastik_web.abc import Box
from ilastik_web.sources import open_source

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
RADIUS = 2.0  # voxels
ZOOM = 0.5  # voxels per screen pixel: 2 pixels per voxel
PROJECT = "demo-project"


def _open_viewer(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=60_000)
    return page, errors


def _camera(page) -> dict:
    return page.evaluate("""(() => {
      const s = viewer.state.toJSON();
      return {position: s.position, scale: s.crossSectionScale};
    })()""")


def _plan_stroke(ground_truth: np.ndarray, value: int, z: float, window) -> list[list[float]]:
    """Voxel points (x, y, z) of a horizontal drag inside a region of class ``value``."""
    y, x0, x1 = longest_run(ground_truth == value, margin=int(RADIUS) + 2, window=window)
    assert x1 - x0 >= 8, f"no room for a stroke of class {value}"
    xs = np.linspace(x0 + 1, x1 - 1, 6)
    return [[float(x) + 0.5, y + 0.5, z] for x in xs]


def _drag_voxels(page, voxels) -> np.ndarray:
    """Drag through ``voxels`` with the real mouse; return the path the viewer reported."""
    points = screen_points(page, voxels)
    drag(page, points)
    reported = voxels_under(page, points)
    assert all(r is not None for r in reported), reported
    return np.array(reported)


def _labels_now(server, base_version_revision: int, z: int) -> tuple[np.ndarray, int]:
    info = wait_for(
        lambda: (lambda p: p if p["label_revision"] > base_version_revision else None)(
            api(server.base, f"/api/projects/{PROJECT}")),
        30, "the stroke's label revision")
    labels = info["layers"]["labels"]
    return label_slice(server.base, labels["id"], labels["version"], z, (512, 512)), \
        info["label_revision"]


def _check_stroke(labels: np.ndarray, value: int, path: np.ndarray) -> None:
    """Labelled voxels of ``value`` lie within one voxel of the brush swept along ``path``."""
    distance = distance_to_path(path[:, :2], labels.shape)
    painted = labels == value
    assert painted.sum() > 20, f"class {value}: only {painted.sum()} voxels labelled"
    assert distance[painted].max() <= RADIUS + 1.0, (
        f"class {value}: a label {distance[painted].max():.2f} voxels from the drag")
    inside = distance <= RADIUS - 1.0
    assert painted[inside].all(), f"class {value}: {(~painted[inside]).sum()} voxels missed"


def test_paint_predict_undo(demo_server, browser, artifacts):
    page, errors = _open_viewer(browser, demo_server.url)
    assert page.evaluate("ilastikWeb.ng.checkInternals()") == []

    # A clear view of the raw data: ground truth hidden, zoomed to 2 screen pixels per voxel,
    # the xy panel only (so the server computes predictions for one plane: fast enough).
    # The demo's ground truth starts hidden: shown, it looks like a finished segmentation.
    assert page.evaluate("""viewer.layerManager.managedLayers
      .find((m) => m.name === "ground truth").visible""") is False
    page.evaluate(f"""(() => {{
      viewer.layerManager.managedLayers.find((m) => m.name === "ground truth").setVisible(false);
      viewer.state.children.get("crossSectionScale").restoreState({ZOOM});
      viewer.state.children.get("layout").restoreState("xy");
    }})()""")
    panel_index = page.evaluate(f"""Array.from(document.querySelectorAll("{PANEL}"))
      .indexOf(ilastikWeb.ng.panels().find((p) => p.sliceView !== undefined &&
                                               ilastikWeb.ng.planeOf(p) === "xy").element)""")
    box = xy_panel_box(page)
    wait_for(lambda: panel_image(page, panel_index).std() > 10, 45, "the raw data drawn")
    # The panel before any label or prediction: training is quick, so on a busy machine the
    # predictions can be on screen before the strokes' overlay has been replaced.
    shown = [panel_image(page, panel_index)]

    def raw_settled() -> bool:
        shown.append(panel_image(page, panel_index))
        return bool(np.array_equal(shown[-2], shown[-1]))

    wait_for(raw_settled, 60, "the raw data to finish drawing")
    before = shown[-1]

    # Where to paint: regions of two ground-truth classes in the visible part of the slice.
    centre = page.evaluate("viewer.state.toJSON().position")
    z = int(np.floor(centre[2]))
    truth = open_source(str(demo_server.labels_path)).base.read(
        Box((z, 0, 0), (z + 1, 512, 512)))[0, 0]
    half = int(min(box["width"], box["height"]) * ZOOM / 2) - 12
    cx, cy = int(centre[0]), int(centre[1])
    window = (cx - half, cx + half, cy - half, cy + half)
    stroke_a = _plan_stroke(truth, 3, centre[2], window)  # cytoplasm
    stroke_b = _plan_stroke(truth, 1, centre[2], window)  # background (extracellular)

    # Paint mode by key, brush radius 3 -> 2 with "[" twice, class by Shift+digit.
    page.keyboard.press("p")
    page.keyboard.press("BracketLeft")
    page.keyboard.press("BracketLeft")
    assert page.evaluate("[ilastikWeb.brush.paintMode, ilastikWeb.brush.radius]") == [True, RADIUS]
    camera_before = _camera(page)

    page.keyboard.press("Shift+Digit3")
    path_a = _drag_voxels(page, stroke_a)
    # The stroke shows at once, before the server answers.
    assert page.evaluate("ilastikWeb.brush.pending.length") >= 1
    labels, revision_a = _labels_now(demo_server, 0, z)
    _check_stroke(labels, 3, path_a)

    page.keyboard.press("Shift+Digit1")
    path_b = _drag_voxels(page, stroke_b)
    labels, revision_b = _labels_now(demo_server, revision_a, z)
    _check_stroke(labels, 1, path_b)
    _check_stroke(labels, 3, path_a)
    wait_for(lambda: page.evaluate("ilastikWeb.brush.pending.length === 0"), 20,
             "the overlay strokes replaced by the labels layer")
    page.screenshot(path=str(artifacts / "paint-1-strokes.png"))

    # Live training: a generation appears, and its probabilities are drawn in the panel.
    wait_for(lambda: api(demo_server.base, f"/api/projects/{PROJECT}")["generation"] >= 1,
             120, "the first classifier generation")
    # The coarse scales of the probabilities come first; the fine ones may take a while on a
    # busy machine, so wait for the colour on screen rather than for every chunk.
    def changed_fraction() -> float:
        after = panel_image(page, panel_index)
        return float((np.abs(after - before).max(axis=-1) > 30).mean())

    def explain() -> str:
        page.screenshot(path=str(artifacts / "paint-2-timeout.png"))
        project = api(demo_server.base, f"/api/projects/{PROJECT}")
        layers = page.evaluate("""viewer.layerManager.managedLayers.map((m) => [
          m.name, m.visible, JSON.stringify(m.layer?.toJSON()?.source ?? null)])""")
        statuses = page.locator("#neuroglancer-status-container").inner_text()
        return (f"changed fraction {changed_fraction():.3f}\nproject: {project}\n"
                f"viewer layers: {layers}\nstatus: {statuses}\nerrors: {errors}\n"
                f"server log:\n{demo_server.log_tail()}")

    wait_for(lambda: changed_fraction() > 0.3, 240, "the predictions drawn in the xy panel",
             explain=explain)
    page.screenshot(path=str(artifacts / "paint-2-predictions.png"))
    assert changed_fraction() > 0.3
    camera_after = _camera(page)
    assert camera_after == camera_before, "the view moved when the layers switched"
    assert page.evaluate("document.getElementById('iw-training').dataset.generation") != "0"

    # Undo removes the last stroke (class 1) and keeps the first.
    page.keyboard.press("Control+z")
    labels, _ = _labels_now(demo_server, revision_b, z)
    assert not (labels == 1).any(), "undo left labels of the last stroke"
    _check_stroke(labels, 3, path_a)

    page.screenshot(path=str(artifacts / "paint-3-undone.png"))
    assert _camera(page) == camera_before
    stats = page.evaluate("ilastikWeb.stats")
    assert stats["swaps"] >= 2, stats  # new versions swapped in place, not rebuilt

    # The view and active class are in the URL, and a reload restores them.
    wait_for(lambda: "#iw=" in page.url, 5, "the view in the URL")
    page.goto(page.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=60_000)
    assert _camera(page) == camera_before
    assert page.evaluate("ilastikWeb.brush.label") == 1
    assert not errors, errors
    status_messages = page.locator("#neuroglancer-status-container").inner_text()
    assert "Cannot" not in status_messages and "Error" not in status_messages, status_messages
    page.close()

    if os.environ.get("ILASTIK_WEB_UPDATE_DOCS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        for name in ("paint-1-strokes", "paint-2-predictions", "paint-3-undone"):
            save_for_docs(artifacts / f"{name}.png", DOCS_IMAGES / f"{name}.jpg")
