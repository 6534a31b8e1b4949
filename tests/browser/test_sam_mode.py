"""SAM mode in the real viewer: headless Chromium, real mouse events, the real CLI on the demo
with a tiny randomly initialised SAM checkpoint.

Click for a point, Shift+click for a negative point, drag for a box; check what each prompt
sent (plane, slice, voxel points under the mouse), that the preview is drawn on the overlay
in the active class colour, that Enter paints exactly the previewed voxels into the labels
as the active class and Escape throws a preview away; a model whose checkpoint vanished
answers 503 into the status line; without a model the SAM button is disabled. Mask content
is never asserted (the weights are random).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from paint_helpers import (
    api,
    drag,
    label_slice,
    voxels_under,
    wait_for,
    xy_panel_box,
)
from server_process import stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("torchvision")

# The tiny SAM is built by the SAM tests' own helper.
_SAM_TESTS = str(Path(__file__).resolve().parents[1] / "sam")
if _SAM_TESTS not in sys.path:
    sys.path.insert(0, _SAM_TESTS)
from sam_fixtures import build_tiny_sam  # noqa: E402

from ilastik_web.sam.encoding import decode_rle  # noqa: E402

PROJECT = "demo-project"
MEMBRANE = 2  # the class accepted into (not the default first class)
MEMBRANE_RGB = (0, 255, 0)

# The xy panel's overlay canvas: how many pixels are drawn, and their mean colour.
_OVERLAY_PIXELS = """(() => {
  const ng = window.ilastikWeb.ng;
  const panel = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
  const canvas = panel.element.querySelector("canvas.iw-overlay");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0, r = 0, g = 0, b = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    count++; r += data[i]; g += data[i + 1]; b += data[i + 2];
  }
  return {count, rgb: count ? [r / count, g / count, b / count] : null};
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sam_server(demo_cache, tmp_path) -> Iterator[dict]:
    """The CLI on the demo (fresh project) with a tiny SAM and a second model whose
    checkpoint the test deletes."""
    from ilastik_web.demo import ensure_demo

    tiny = tmp_path / "tiny_vit_b.pt"
    torch.save(build_tiny_sam().state_dict(), tiny)
    doomed = tmp_path / "doomed.pt"
    shutil.copy(tiny, doomed)
    demo = ensure_demo(demo_cache)
    shutil.rmtree(demo.raw_path.parent / PROJECT, ignore_errors=True)
    port = _free_port()
    env = {**os.environ, "ILASTIK_WEB_CACHE": str(demo_cache)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", "--port", str(port), "--no-browser",
         "--log-level", "WARNING", "--workers", "4", "--sam-device", "cpu",
         "--sam-model", f"tiny=vit_b:{tiny}", "--sam-model", f"doomed=vit_b:{doomed}"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)} before printing its URL")
        yield {"url": url, "base": f"http://127.0.0.1:{port}", "doomed": doomed}
    finally:
        stop_server(process)


def _open_viewer(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady "
                           "&& ilastikWeb.sam", timeout=60_000)
    return page, errors


def _prompt_of(page, action) -> dict:
    """Run ``action`` (a real mouse gesture) and return the body of the prompt it sent."""
    with page.expect_request(lambda r: r.url.endswith("/api/sam/prompt")) as caught:
        action()
    body = json.loads(caught.value.post_data)
    page.wait_for_function("ilastikWeb.sam.busy === 0", timeout=30_000)
    return body


def _within_one_voxel(sent, expected) -> bool:
    return bool(np.all(np.abs(np.asarray(sent, float) - np.asarray(expected, float)) <= 1.0))


def _mask_on_slice(mask_json: dict, shape_yx=(512, 512)) -> np.ndarray:
    """The single-slice xy preview as a full (y, x) boolean slice."""
    (entry,) = mask_json["slices"]
    full = np.zeros(shape_yx, dtype=bool)
    if entry["box_xyz"] is None:
        return full
    (x0, y0, _), (x1, y1, _) = entry["box_xyz"]
    full[y0:y1, x0:x1] = decode_rle(entry["rle"], entry["shape"])
    return full


def test_sam_click_refine_accept_reject(sam_server, browser, artifacts):
    base = sam_server["base"]
    api(base, f"/api/projects/{PROJECT}/live", "PUT", {"enabled": False})  # no retraining
    page, errors = _open_viewer(browser, sam_server["url"])
    page.wait_for_function("ilastikWeb.sam.unavailable === null", timeout=10_000)
    assert page.is_enabled("#iw-sam")
    page.evaluate("""(() => {
      viewer.layerManager.managedLayers.find((m) => m.name === "ground truth").setVisible(false);
      viewer.state.children.get("layout").restoreState("xy");
      viewer.state.children.get("crossSectionScale").restoreState(1);
    })()""")
    time.sleep(1.0)
    box = xy_panel_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    page.keyboard.press("Shift+Digit2")  # the active class: membrane (green)
    page.keyboard.press("m")
    assert page.evaluate("ilastikWeb.sam.mode") is True
    assert "iw-on" in page.get_attribute("#iw-sam", "class")
    assert page.evaluate(_OVERLAY_PIXELS)["count"] == 0
    camera = page.evaluate("viewer.state.toJSON().position")

    # A click: a positive point on the slice under the mouse, in voxels the viewer reports.
    click_at = [cx - 30, cy - 20]
    first = _prompt_of(page, lambda: page.mouse.click(*click_at))
    (under,) = voxels_under(page, [click_at])
    assert first["plane"] == "xy" and first["project_id"] == PROJECT
    assert first["index"] == int(np.floor(under[2]))
    assert first["point_labels"] == [1] and "previous_mask_id" not in first
    assert _within_one_voxel(first["points_xyz"][0], under), (first["points_xyz"], under)
    preview = page.evaluate("ilastikWeb.sam.preview")
    assert preview["plane"] == "xy" and preview["slices"][0]["index"] == first["index"]
    assert page.evaluate("viewer.state.toJSON().position") == camera, "the click moved the view"

    # The preview is drawn on the overlay in the active class colour.
    drawn = wait_for(lambda: (lambda o: o if o["count"] > 200 else None)(
        page.evaluate(_OVERLAY_PIXELS)), 5, "the preview on the overlay")
    green = np.asarray(drawn["rgb"])
    assert green[1] > 150 and green[0] < 120 and green[2] < 120, drawn
    page.screenshot(path=str(artifacts / "sam-1-preview.png"))

    # Shift+click: a negative point refining the first mask.
    negative_at = [cx + 40, cy + 35]
    page.keyboard.down("Shift")
    second = _prompt_of(page, lambda: page.mouse.click(*negative_at))
    page.keyboard.up("Shift")
    (under_negative,) = voxels_under(page, [negative_at])
    assert second["point_labels"] == [1, 0]
    assert second["previous_mask_id"] == preview["mask_id"]
    assert _within_one_voxel(second["points_xyz"][1], under_negative)

    # A drag: a box from the press to the release point, refining again.
    corners = [[cx - 90, cy - 70], [cx + 70, cy + 60]]
    third = _prompt_of(page, lambda: drag(page, corners, steps=6))
    start, end = voxels_under(page, corners)
    assert third["previous_mask_id"] != preview["mask_id"]
    assert _within_one_voxel(third["box_xyz"][0], start)
    assert _within_one_voxel(third["box_xyz"][1][:2], end[:2])
    assert third["box_xyz"][1][2] == third["box_xyz"][0][2]  # on the pressed slice
    assert len(third["points_xyz"]) == 2
    page.screenshot(path=str(artifacts / "sam-2-refined.png"))

    # Enter accepts into the labels as the active class: exactly the previewed voxels.
    current = page.evaluate("ilastikWeb.sam.preview")
    previewed = _mask_on_slice(api(base, f"/api/sam/masks/{current['mask_id']}"))
    assert previewed.any()
    before = api(base, f"/api/projects/{PROJECT}")
    page.keyboard.press("Enter")
    page.wait_for_function("ilastikWeb.sam.lastAccept !== null && !ilastikWeb.sam.preview",
                           timeout=30_000)
    after = wait_for(lambda: (lambda p: p if p["label_revision"] > before["label_revision"]
                              else None)(api(base, f"/api/projects/{PROJECT}")),
                     20, "the accepted label revision")
    labels_layer = after["layers"]["labels"]
    assert labels_layer["version"] != before["layers"]["labels"]["version"]
    page.wait_for_function(
        "(v) => (ilastikWeb.ng.sourceUrlOf(ilastikWeb.ng.layerServing(v[0])) || '')"
        ".indexOf(v[1]) !== -1", arg=[labels_layer["id"], labels_layer["version"]],
        timeout=20_000)
    labels = label_slice(base, labels_layer["id"], labels_layer["version"], first["index"],
                         (512, 512))
    assert np.array_equal(labels == MEMBRANE, previewed), "labels differ from the preview"
    assert not ((labels != 0) & (labels != MEMBRANE)).any()
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(base, f"/api/sam/masks/{current['mask_id']}")
    assert gone.value.code == 404
    page.screenshot(path=str(artifacts / "sam-3-accepted.png"))

    # Propagate 3D: a task with progress over index +-10, then a 3D preview to accept or reject.
    _prompt_of(page, lambda: page.mouse.click(cx + 60, cy - 60))
    seed = page.evaluate("ilastikWeb.sam.preview")
    with page.expect_request(lambda r: r.url.endswith("/propagate")) as caught:
        page.click("#iw-sam-propagate")
    index = first["index"]
    assert json.loads(caught.value.post_data)["lower"] == index - 10
    assert json.loads(caught.value.post_data)["upper"] == index + 10
    assert seed["mask_id"] in caught.value.url
    page.wait_for_function("ilastikWeb.sam.task === null && ilastikWeb.sam.preview "
                           "&& ilastikWeb.sam.preview.kind === 'propagated'", timeout=60_000)
    propagated = page.evaluate("ilastikWeb.sam.preview")
    assert propagated["plane"] == "xy"
    assert index in [s["index"] for s in propagated["slices"]]

    # Escape rejects: the mask is forgotten on the server and the labels stay as they were.
    rejected = page.evaluate("ilastikWeb.sam.preview.mask_id")
    with page.expect_request(lambda r: r.method == "DELETE" and rejected in r.url):
        page.keyboard.press("Escape")
    assert page.evaluate("ilastikWeb.sam.preview") is None
    wait_for(lambda: page.evaluate(_OVERLAY_PIXELS)["count"] == 0, 10, "an empty overlay")
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(base, f"/api/sam/masks/{rejected}")
    assert gone.value.code == 404
    assert api(base, f"/api/projects/{PROJECT}")["label_revision"] == after["label_revision"]

    # A model whose checkpoint vanished: the prompt's 503 shows in the status line.
    os.remove(sam_server["doomed"])
    page.select_option("#iw-sam-model", "doomed")
    with page.expect_response(lambda r: r.url.endswith("/api/sam/prompt")) as answer:
        page.mouse.click(cx, cy)
    assert answer.value.status == 503
    status = page.locator(".iw-status")
    page.wait_for_function("document.querySelector('.iw-status').textContent.includes("
                           "'checkpoint')", timeout=10_000)
    assert "iw-error" in status.get_attribute("class")
    page.keyboard.press("Escape")

    # SAM mode and paint mode exclude each other.
    page.keyboard.press("p")
    assert page.evaluate("[ilastikWeb.sam.mode, ilastikWeb.brush.paintMode]") == [False, True]
    assert not errors, errors
    page.close()


def test_sam_disabled_without_models(demo_server, browser):
    page, errors = _open_viewer(browser, demo_server.url)
    page.wait_for_function("ilastikWeb.sam.unavailable && ilastikWeb.sam.unavailable"
                           ".includes('--sam-model')", timeout=10_000)
    assert not page.is_enabled("#iw-sam")
    assert not page.is_enabled("#iw-sam-auto-run")
    assert "--sam-model" in page.get_attribute("#iw-sam", "title")
    page.keyboard.press("m")
    assert page.evaluate("ilastikWeb.sam.mode") is False
    assert "--sam-model" in page.locator(".iw-status").inner_text()
    # The help lists the SAM keys.
    page.keyboard.press("?")
    assert "SAM mode" in page.locator("#iw-help").inner_text()
    assert not errors, errors
    page.close()


def test_segment_everything_button(sam_server, browser):
    """The button segments the slice the viewer is on (micro-sam's AMG) and the objects
    land in the project's instance layer, which appears in the viewer."""
    pytest.importorskip("micro_sam")
    base = sam_server["base"]
    api(base, f"/api/projects/{PROJECT}/live", "PUT", {"enabled": False})
    page, errors = _open_viewer(browser, sam_server["url"])
    page.wait_for_function("ilastikWeb.sam.unavailable === null && ilastikWeb.samAuto",
                           timeout=10_000)
    assert page.is_enabled("#iw-sam-auto-run")
    position = page.evaluate("viewer.state.toJSON().position")
    page.select_option("#iw-sam-auto-method", "amg")
    page.fill("#iw-sam-auto-points", "4")
    with page.expect_response(lambda r: r.url.endswith("/api/sam/automatic")) as answer:
        page.click("#iw-sam-auto-run")
    assert answer.value.status == 202
    queued = answer.value.json()
    sent = page.evaluate("ilastikWeb.samAuto.lastBody")
    assert sent["plane"] == "xy" and sent["index"] == int(position[2] // 1)
    assert sent["params"] == {"method": "amg", "points_per_side": 4}
    page.wait_for_function("ilastikWeb.samAuto.task === null", timeout=600_000)
    result = page.evaluate("ilastikWeb.samAuto.lastResult")
    assert result is not None, page.locator(".iw-status").inner_text()
    assert result["method"] == "amg"
    assert page.locator("#iw-sam-auto-info").inner_text().startswith(f"{result['objects']} ")
    task = api(base, f"/api/sam/tasks/{queued['id']}")
    assert task["state"] == "done" and task["result"] == result
    page.wait_for_function(
        "(name) => viewer.layerManager.managedLayers.some((m) => m.name === name)",
        arg=queued["layer_id"], timeout=30_000)
    assert not errors, errors
    page.close()
