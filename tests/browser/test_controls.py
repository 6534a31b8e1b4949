"""Controls that do what they say: the paint-mode badge, wheel and help agree, the brush
circle sits where paint lands, shortcuts with a focused panel control, the brush kept
across reload, layer checkboxes following Neuroglancer, SAM's message in sight, readable
feature importances."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from paint_helpers import PANEL, api, label_slice, pixels_around, wait_for, xy_panel_box

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCALE = 0.25  # voxels per screen pixel: 4 pixels per voxel


@pytest.fixture
def project_server(serve, tmp_path):
    rng = np.random.default_rng(2)
    tifffile.imwrite(tmp_path / "blobs.tif", rng.integers(0, 255, (8, 96, 96), np.uint8))
    served = serve(str(tmp_path / "blobs.tif"), "--voxel-size", "40,8,8", project=True)
    served.project = api(served.base, "/api/projects")["projects"][0]["id"]
    return served


def _open(browser, served, height=900):
    page = browser.new_page(viewport={"width": 1200, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=60_000)
    page.wait_for_selector(PANEL)
    return page, errors


def _xy_layout(page):
    page.evaluate(f"""(() => {{
      viewer.state.children.get("layout").restoreState("xy");
      viewer.state.children.get("crossSectionScale").restoreState({SCALE});
    }})()""")
    page.wait_for_timeout(300)  # a layout change re-creates the panels: let them settle


def _camera(page):
    return page.evaluate("""(() => { const s = viewer.state.toJSON();
      return {z: s.position[2], scale: s.crossSectionScale}; })()""")


def test_paint_badge_wheel_help_and_persistence(project_server, browser):
    page, errors = _open(browser, project_server)
    _xy_layout(page)
    badge = page.locator("#iw-mode-badge")
    assert not badge.is_visible()
    page.keyboard.press("p")
    assert badge.is_visible() and "PAINTING" in badge.inner_text()
    page.keyboard.press("e")
    assert "ERASING" in badge.inner_text()
    page.keyboard.press("e")

    # the wheel follows Neuroglancer's conventions in paint mode too, as the help says
    box = xy_panel_box(page)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    before = _camera(page)
    page.mouse.wheel(0, 100)
    wait_for(lambda: _camera(page)["z"] != before["z"], 10, "the wheel to change slice")
    assert _camera(page)["scale"] == pytest.approx(before["scale"])
    page.keyboard.down("Control")
    page.mouse.wheel(0, 100)
    page.keyboard.up("Control")
    wait_for(lambda: _camera(page)["scale"] != before["scale"], 10, "Ctrl+wheel to zoom")
    page.keyboard.press("?")
    help_text = page.inner_text("#iw-help")
    assert "next / previous slice" in help_text and "Ctrl+wheel" in help_text
    assert "wheel zooms" not in help_text
    page.keyboard.press("Escape")

    # a second P turns paint mode off, visibly
    page.keyboard.press("p")
    assert not badge.is_visible()
    page.keyboard.press("p")
    for _ in range(3):
        page.keyboard.press("BracketRight")
    radius = page.evaluate("ilastikWeb.brush.radius")
    page.reload()
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready", timeout=60_000)
    assert page.evaluate("ilastikWeb.brush.radius") == radius
    assert page.evaluate("ilastikWeb.brush.paintMode") is True
    assert page.locator("#iw-mode-badge").is_visible()
    assert f"radius {radius} vox" in page.inner_text(".iw-size-label")
    assert not errors, errors
    page.close()


def test_shortcuts_with_focused_controls_and_layer_checkboxes(project_server, browser):
    page, errors = _open(browser, project_server)
    base, project = project_server.base, project_server.project

    def live():
        return api(base, f"/api/projects/{project}")["live_updates"]

    start = live()
    page.click("#iw-live")  # the checkbox keeps the focus
    wait_for(lambda: live() != start, 10, "the live checkbox to apply")
    page.keyboard.press("Shift+L")
    wait_for(lambda: live() == start, 10, "Shift+L with the live checkbox focused")
    page.click("#iw-eraser")  # a panel button keeps the focus
    page.keyboard.press("Shift+L")
    wait_for(lambda: live() != start, 10, "Shift+L with a panel button focused")

    # visibility changed in Neuroglancer shows in the panel's checkbox
    checkbox = page.locator('#iw-layers input[data-role="labels"]')
    assert checkbox.is_checked()
    page.evaluate("""(() => { const id = ilastikWeb.labelsLayerId;
      ilastikWeb.ng.layerServing(id).setVisible(false); })()""")
    wait_for(lambda: not checkbox.is_checked(), 10, "the labels checkbox to follow")
    page.evaluate("""ilastikWeb.ng.layerServing(ilastikWeb.labelsLayerId).setVisible(true)""")
    wait_for(lambda: checkbox.is_checked(), 10, "the labels checkbox to follow back")
    assert not errors, errors
    page.close()


def test_brush_circle_is_centred_where_paint_lands(project_server, browser):
    page, errors = _open(browser, project_server)
    _xy_layout(page)
    page.keyboard.press("p")
    page.evaluate("ilastikWeb.brush.set({radius: 2.5})")
    box = xy_panel_box(page)
    # the screen position of a voxel centre near the middle, on whole pixels
    target = page.evaluate("""(() => {
      const ng = ilastikWeb.ng;
      const panel = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      const c = ng.panelCenter(panel);
      return ng.screenOf(panel, [Math.floor(c[0]) + 0.5, Math.floor(c[1]) + 0.5, c[2]]);
    })()""")
    x, y = box["x"] + round(target[0]), box["y"] + round(target[1])
    page.mouse.move(x - 20, y - 20)
    page.mouse.move(x, y, steps=4)
    page.wait_for_timeout(100)  # a frame of the overlay
    ring = np.array(page.evaluate("""(() => {
      const ng = ilastikWeb.ng;
      const panel = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      const canvas = panel.element.querySelector("canvas.iw-overlay");
      const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      let sx = 0, sy = 0, n = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] === 0) continue;
        const p = i / 4;
        sx += p % canvas.width;
        sy += Math.floor(p / canvas.width);
        n++;
      }
      return [sx / n + 0.5, sy / n + 0.5];
    })()"""))
    info = api(project_server.base, f"/api/projects/{project_server.project}")
    revision = info["label_revision"]
    page.mouse.down()
    page.mouse.up()
    info = wait_for(lambda: (lambda i: i if i["label_revision"] > revision else None)(
        api(project_server.base, f"/api/projects/{project_server.project}")), 30, "the dot")
    z = int(np.floor(page.evaluate("viewer.state.toJSON().position[2]")))
    labels = label_slice(project_server.base, info["layers"]["labels"]["id"],
                         info["layers"]["labels"]["version"], z, (96, 96))
    ys, xs = np.nonzero(labels)
    assert len(xs) > 10
    painted = page.evaluate("""(v) => {
      const ng = ilastikWeb.ng;
      const panel = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      return ng.screenOf(panel, v);
    }""", [float(xs.mean() + 0.5), float(ys.mean() + 0.5), z + 0.5])
    offset = float(np.hypot(*(ring - np.array(painted))))
    assert offset < 1.0, f"brush circle {offset:.2f} px from the painted dot's centre"
    assert not errors, errors
    page.close()


def test_sam_message_in_sight_in_a_900px_window(project_server, browser):
    page, errors = _open(browser, project_server, height=900)
    info = page.locator("#iw-sam-info")
    wait_for(lambda: "No SAM model is configured" in info.inner_text(), 30, "the SAM hint")
    box = info.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 900, box
    # and the status line stays in sight however long the panel is
    status = page.locator(".iw-status").bounding_box()
    assert status["y"] + min(status["height"], 20) <= 900, status
    assert not errors, errors
    page.close()


def test_feature_importances_readable_and_current(project_server, browser):
    base, project = project_server.base, project_server.project
    api(base, f"/api/projects/{project}/live", "PUT", {"enabled": False})
    for label, y in ((1, 20.5), (2, 70.5)):
        api(base, f"/api/projects/{project}/strokes", "POST", {
            "points_xyz": [[10.5, y, 4.5], [80.5, y, 4.5]], "radius": 3, "label": label,
            "plane": "xy"})
    assert api(base, f"/api/projects/{project}/train", "POST")["generation"] == 1
    page, errors = _open(browser, project_server)
    box = page.locator("#iw-importance")
    wait_for(lambda: "generation 1" in box.inner_text(), 30, "the importances")
    sigmas = page.locator("#iw-importance .iw-bar-sigma").all_inner_texts()
    assert sigmas and all(s.startswith("σ ") for s in sigmas), sigmas
    clipped = page.evaluate("""Array.from(document.querySelectorAll(
      '#iw-importance .iw-bar-sigma')).filter((e) => e.scrollWidth > e.clientWidth).length""")
    assert clipped == 0
    # the σ header cells of the feature table do not run together
    gaps = page.evaluate("""(() => {
      const cells = Array.from(document.querySelectorAll('#iw-features thead th')).slice(1);
      const boxes = cells.map((c) => { const r = c.getBoundingClientRect();
        const range = document.createRange(); range.selectNodeContents(c);
        const t = range.getBoundingClientRect(); return [t.left, t.right]; });
      return boxes.slice(1).map((b, i) => b[0] - boxes[i][1]);
    })()""")
    assert gaps and min(gaps) >= 2, gaps
    # Apply features: the importances follow the new generation, not the previous one
    page.locator('#iw-features input[data-feature="GaussianSmoothing"]').last.click()
    page.click("#iw-features-apply")
    wait_for(lambda: "features applied" in page.inner_text(".iw-status"), 30, "Apply")
    page.click("#iw-train")  # live updates are off
    wait_for(lambda: api(base, f"/api/projects/{project}")["generation"] >= 2, 60,
             "retraining after Apply")
    generation = api(base, f"/api/projects/{project}")["generation"]
    wait_for(lambda: f"generation {generation}" in box.inner_text(), 30,
             "the importances of the new generation")
    assert not errors, errors
    page.close()


def test_labels_on_top_with_own_opacity_and_class_toggles(project_server, browser):
    base, project = project_server.base, project_server.project
    api(base, f"/api/projects/{project}/live", "PUT", {"enabled": False})
    for label, y in ((1, 20.5), (2, 70.5)):
        api(base, f"/api/projects/{project}/strokes", "POST", {
            "points_xyz": [[10.5, y, 4.5], [80.5, y, 4.5]], "radius": 4, "label": label,
            "plane": "xy"})
    api(base, f"/api/projects/{project}/train", "POST")
    page, errors = _open(browser, project_server)
    wait_for(lambda: page.evaluate("viewer.state.toJSON().layers.length") >= 5, 30,
             "the prediction layers")
    names = page.evaluate("viewer.state.toJSON().layers.map((l) => l.name)")
    assert names[-1] == "labels", names  # drawn above the predictions
    assert page.evaluate("""ilastikWeb.ng.layerServing(ilastikWeb.labelsLayerId)
      .layer.displayState.selectedAlpha.value""") == pytest.approx(0.8)
    # predictions out of the way, so the pixels are the labels' own
    page.evaluate("""ilastikWeb.ng.managedLayers().forEach((m) => {
      if (!["labels", "blobs"].includes(m.name)) m.setVisible(false); })""")
    page.evaluate("""viewer.state.children.get("position").restoreState([48, 48, 4.5])""")

    def green_at_class_2():
        patch = pixels_around(page, [[40, 70.5, 4.5]], radius=3)[0].mean(axis=(0, 1))
        return patch[1] - (patch[0] + patch[2]) / 2
    wait_for(lambda: green_at_class_2() > 60, 30, "class 2 drawn in green")
    page.fill("#iw-label-opacity", "0.2")
    page.dispatch_event("#iw-label-opacity", "input")
    wait_for(lambda: page.evaluate("""ilastikWeb.ng.layerServing(ilastikWeb.labelsLayerId)
      .layer.displayState.selectedAlpha.value""") == pytest.approx(0.2), 10, "the opacity")
    page.fill("#iw-label-opacity", "1")
    page.dispatch_event("#iw-label-opacity", "input")
    page.uncheck('#iw-label-classes input[data-value="2"]')
    wait_for(lambda: green_at_class_2() < 20, 30, "class 2 hidden")
    page.check('#iw-label-classes input[data-value="2"]')
    wait_for(lambda: green_at_class_2() > 60, 30, "class 2 shown again")
    assert not errors, errors
    page.close()


def test_export_region_drawn_as_a_box(project_server, browser):
    from paint_helpers import drag, screen_points, voxels_under

    base, project = project_server.base, project_server.project
    api(base, f"/api/projects/{project}/live", "PUT", {"enabled": False})
    for label, y in ((1, 20.5), (2, 70.5)):
        api(base, f"/api/projects/{project}/strokes", "POST", {
            "points_xyz": [[10.5, y, 4.5], [80.5, y, 4.5]], "radius": 3, "label": label,
            "plane": "xy"})
    api(base, f"/api/projects/{project}/train", "POST")
    page, errors = _open(browser, project_server)
    _xy_layout(page)
    page.click("#iw-box-draw")
    z = page.evaluate("viewer.state.toJSON().position[2]")
    before = page.evaluate("viewer.state.toJSON().position")
    points = [[round(x), round(y)] for x, y in
              screen_points(page, [[10.5, 12.5, z], [25.0, 20.0, z], [40.5, 30.5, z]])]
    drag(page, points)
    # the box spans the voxels under the drag's ends (whole voxels), all 8 slices
    (ax, ay, _), _, (bx, by, _) = voxels_under(page, points)
    x0, y0 = int(np.floor(ax)), int(np.floor(ay))
    x1, y1 = int(np.floor(bx)) + 1, int(np.floor(by)) + 1
    roi = f"0:8,{y0}:{y1},{x0}:{x1}"
    assert abs(x0 - 10) <= 1 and abs(y1 - 31) <= 1, roi
    assert page.input_value("#iw-job-roi") == roi
    assert page.evaluate("viewer.state.toJSON().position") == before  # the drag did not pan
    assert not page.evaluate("ilastikWeb.exportBox.armed")
    # the box is drawn where the region is
    page.wait_for_timeout(100)
    corners = screen_points(page, [[x0, y0, z], [x1, y1, z]])
    drawn = page.evaluate("""(() => {
      const ng = ilastikWeb.ng;
      const panel = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      const c = panel.element.querySelector("canvas.iw-box-overlay");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let x0 = 1e9, y0 = 1e9, x1 = -1, y1 = -1;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] === 0) continue;
        const x = (i / 4) % c.width, y = Math.floor(i / 4 / c.width);
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
      }
      const r = panel.element.getBoundingClientRect();
      return [x0 + r.left, y0 + r.top, x1 + r.left, y1 + r.top];
    })()""")
    assert abs(drawn[0] - corners[0][0]) < 3 and abs(drawn[1] - corners[0][1]) < 3, drawn
    assert abs(drawn[2] - corners[1][0]) < 3 and abs(drawn[3] - corners[1][1]) < 3, drawn
    # and the export uses it
    page.select_option("#iw-job-export", "segmentation")
    with page.expect_response(lambda r: r.url.endswith(f"/api/projects/{project}/jobs")
                              and r.request.method == "POST") as answer:
        page.click("#iw-job-submit")
    assert answer.value.status == 201, answer.value.text()
    assert roi in answer.value.request.post_data
    assert not errors, errors
    page.close()
