"""Choices a user makes in the viewer's side panel: the channels that feed the features,
labels as outlines, class probabilities under the mouse, and the engine and dtype of an
export. Real Chromium, the real CLI, real clicks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from paint_helpers import api, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def _two_channel_tif(tmp_path):
    import tifffile

    rng = np.random.default_rng(3)
    data = np.zeros((2, 8, 128, 128), np.uint16)
    data[0] = rng.integers(0, 50, data.shape[1:])
    data[0, :, :, :64] += 300
    data[1] = rng.integers(0, 500, data.shape[1:])
    data[1, :, :, 64:] += 20000
    path = tmp_path / "two.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "CZYX"}, ome=True)
    return path


def test_channels_that_feed_the_features_are_chosen_in_the_channel_panel(serve, browser,
                                                                         tmp_path):
    served = serve(str(_two_channel_tif(tmp_path)), "--voxel-size", "100,50,50", project=True)
    project = api(served.base, "/api/projects")["projects"][0]
    assert project["feature_channels"] == [0, 1]
    page, errors = _page(browser)
    page.goto(served.url)
    boxes = page.locator("#iw-channels .iw-channel-feature")
    wait_for(lambda: boxes.count() == 2, 60, "a features checkbox per raw channel")
    assert boxes.nth(0).is_checked() and boxes.nth(1).is_checked()
    note = page.locator("#iw-feature-channels")
    assert note.inner_text() == "Features from channels 0, 1"

    boxes.nth(0).uncheck()
    features_of = f"/api/projects/{project['id']}/features"
    wait_for(lambda: api(served.base, features_of)["channels"] == [1], 30,
             "the server's feature channels to become [1]")
    wait_for(lambda: note.inner_text() == "Features from channel 1", 10, "the note")
    folder = tmp_path / "data"
    saved = [json.loads(p.read_text()) for p in folder.rglob("project.json")] or [
        json.loads(p.read_text()) for p in tmp_path.rglob("project.json")]
    assert [s["feature_channels"] for s in saved] == [[1]]
    # the last channel cannot go: the server says why and the box stays checked
    boxes.nth(1).uncheck()
    status = page.locator(".iw-status")
    wait_for(lambda: "at least one channel" in status.inner_text(), 10, "the refusal")
    wait_for(lambda: boxes.nth(1).is_checked(), 10, "channel 1 checked again")
    assert api(served.base, features_of)["channels"] == [1]

    # the choice lives on the server: a reload shows it
    page.reload()
    wait_for(lambda: boxes.count() == 2 and not boxes.nth(0).is_checked()
             and boxes.nth(1).is_checked(), 60, "the choice after a reload")
    assert not errors, errors
    page.close()


def _blob_server(serve, tmp_path):
    import tifffile

    rng = np.random.default_rng(2)
    data = rng.integers(0, 60, (8, 96, 96)).astype(np.uint8)
    data[:, 20:60, 20:60] += 150  # a bright square on a dark background
    tifffile.imwrite(tmp_path / "blobs.tif", data)
    served = serve(str(tmp_path / "blobs.tif"), "--voxel-size", "40,8,8", project=True)
    served.project = api(served.base, "/api/projects")["projects"][0]["id"]
    return served


def _train(served):
    path = f"/api/projects/{served.project}"
    api(served.base, path + "/live", "PUT", {"enabled": False})
    for label, (x0, x1, y) in ((1, (70, 90, 80.5)), (2, (30, 50, 40.5))):
        api(served.base, path + "/strokes", "POST", {
            "points_xyz": [[x0 + 0.5, y, 4.5], [x1 + 0.5, y, 4.5]], "radius": 2, "label": label,
            "plane": "xy"})
    return api(served.base, path + "/train", "POST")["generation"]


def _open(browser, served):
    page, errors = _page(browser)
    page.goto(served.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=60_000)
    page.evaluate("""(() => {
      viewer.state.children.get("layout").restoreState("xy");
      viewer.state.children.get("crossSectionScale").restoreState(0.25);
      viewer.state.children.get("position").restoreState([48, 48, 4.5]);
    })()""")
    # A layout change re-creates the panels: wait for the one xy panel, laid out, mapping
    # the view's centre to the screen and back.
    page.wait_for_function("""(() => {
      const panels = ilastikWeb.ng.panels().filter((p) => p.sliceView !== undefined);
      if (panels.length !== 1 || panels[0].element.clientWidth < 100) return false;
      const panel = panels[0], r = panel.element.getBoundingClientRect();
      const s = ilastikWeb.ng.screenOf(panel, [48, 48, 4.5]);
      const v = ilastikWeb.ng.voxelAt(panel, r.left + s[0], r.top + s[1]);
      return !!v && Math.abs(v[0] - 48) < 1 && Math.abs(v[1] - 48) < 1;
    })()""", timeout=60_000)
    return page, errors


def test_probabilities_under_the_mouse_are_named_by_class(serve, browser, tmp_path, artifacts):
    from paint_helpers import screen_points

    served = _blob_server(serve, tmp_path)
    path = f"/api/projects/{served.project}"
    classes = api(served.base, path)["classes"]
    for _ in range(len(classes), 2):
        api(served.base, path + "/classes", "POST", {"name": "new"})
    for value, name in ((1, "background"), (2, "square")):
        api(served.base, f"{path}/classes/{value}", "PATCH", {"name": name})
    generation = _train(served)
    page, errors = _open(browser, served)
    section = page.locator("#iw-readout-section")
    wait_for(section.is_visible, 30, "the probabilities readout section")
    rows = page.locator("#iw-readout .iw-readout-class")
    where = page.locator("#iw-readout-where")
    for voxel, likely in (([40.5, 40.5, 4.5], "square"), ([85.5, 15.5, 4.5], "background")):
        (point,) = screen_points(page, [voxel])
        page.mouse.move(point[0] - 3, point[1] - 3)
        page.mouse.move(*point, steps=2)
        # the voxel Neuroglancer itself has under the mouse
        x, y, z = page.evaluate("""Array.from(viewer.mouseState.position).slice(0, 3)
                                   .map(Math.floor)""")
        assert abs(x - voxel[0]) <= 2 and abs(y - voxel[1]) <= 2 and z == 4, (x, y, z)
        wait_for(lambda x=x, y=y: where.inner_text().startswith(f"x {x}, y {y}, z 4"), 90,
                 f"the readout at {(x, y, z)}")
        assert f"generation {generation}" in where.inner_text()
        names = rows.locator(".iw-bar-name").all_inner_texts()
        values = [float(v) for v in rows.locator(".iw-readout-value").all_inner_texts()]
        assert names == ["background", "square"], names
        expected = api(served.base, f"/api/projects/{served.project}/probabilities"
                                    f"?x={x}&y={y}&z={z}")
        assert values == [round(c["probability"], 2) for c in expected["classes"]]
        assert abs(sum(values) - 1) <= 0.02
        assert names[int(np.argmax(values))] == likely, (voxel, values)
    page.screenshot(path=str(artifacts / "probabilities-readout.png"))
    assert not errors, errors
    page.close()


def test_export_engine_and_dtype_are_chosen_in_the_jobs_panel(serve, browser, tmp_path):
    import tifffile

    from ilastik_web.abc import Box
    from ilastik_web.sources import open_source

    rng = np.random.default_rng(2)
    data = rng.integers(0, 60, (8, 96, 96)).astype(np.uint8)
    data[:, 20:60, 20:60] += 150
    tifffile.imwrite(tmp_path / "blobs.tif", data)
    served = serve(str(tmp_path / "blobs.tif"), "--voxel-size", "40,8,8",
                   "--engine", "two=local,workers=2",
                   "--engine", "cluster=dask,address=tcp://127.0.0.1:9", project=True)
    served.project = api(served.base, "/api/projects")["projects"][0]["id"]
    path = f"/api/projects/{served.project}"
    for _ in range(len(api(served.base, path)["classes"]), 2):
        api(served.base, path + "/classes", "POST", {"name": "new"})
    _train(served)
    page, errors = _page(browser)
    page.goto(served.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.jobs",
                           timeout=60_000)
    engine = page.locator("#iw-job-engine option")
    wait_for(lambda: engine.count() == 3, 30, "the server's engines in the picker")
    offered = {e["name"] for e in api(served.base, "/api/engines")["engines"]}
    assert set(engine.evaluate_all("els => els.map(e => e.value)")) == offered == {
        "local", "two", "cluster"}
    assert "cluster (dask)" in engine.all_inner_texts()
    dtypes = page.locator("#iw-job-dtype option")
    page.select_option("#iw-job-export", "segmentation")
    assert dtypes.evaluate_all("els => els.map(e => e.value)") == ["uint8", "uint16"]
    page.select_option("#iw-job-export", "probabilities")
    assert dtypes.evaluate_all("els => els.map(e => e.value)") == ["uint8", "uint16", "float32"]

    page.select_option("#iw-job-dtype", "float32")
    page.select_option("#iw-job-engine", "two")
    page.fill("#iw-job-roi", "2:4,0:96,0:96")
    with page.expect_response(lambda r: r.url.endswith(f"{path}/jobs")
                              and r.request.method == "POST") as answer:
        page.click("#iw-job-submit")
    assert answer.value.status == 201, answer.value.text()
    assert answer.value.request.post_data_json["engine"] == "two"
    job = answer.value.json()
    assert job["dtype"] == "float32" and job["engine"] == "local"
    row = f'.iw-job[data-job="{job["id"]}"]'
    page.wait_for_selector(f'{row}[data-state="DONE"]', timeout=120_000)
    assert page.locator(f"{row} .iw-job-dtype").inner_text() == "float32"
    record = json.loads(next(tmp_path.rglob(f"jobs/{job['id']}/job.json")).read_text())
    assert record["spec"]["engine"]["workers"] == 2  # the engine the user picked
    result = open_source(job["output"]).base
    values = result.read(Box.from_shape(result.shape))
    assert values.dtype == np.float32 and values.shape == (2, 2, 96, 96)
    assert values.min() >= 0 and values.max() <= 1
    np.testing.assert_allclose(values.sum(axis=0), 1, atol=1e-5)
    assert not errors, errors
    page.close()


def test_labels_drawn_as_outlines_from_the_label_display(serve, browser, tmp_path, artifacts):
    import tifffile
    from paint_helpers import label_slice, pixels_around

    tifffile.imwrite(tmp_path / "dark.tif", np.full((8, 96, 96), 10, np.uint8))
    served = serve(str(tmp_path / "dark.tif"), "--voxel-size", "40,8,8", project=True)
    served.project = api(served.base, "/api/projects")["projects"][0]["id"]
    path = f"/api/projects/{served.project}"
    api(served.base, path + "/live", "PUT", {"enabled": False})
    if not api(served.base, path)["classes"]:
        api(served.base, path + "/classes", "POST", {"name": "cells"})
    api(served.base, f"{path}/classes/1", "PATCH", {"color": "#ff0000"})

    def stroke(x, y):
        api(served.base, path + "/strokes", "POST", {
            "points_xyz": [[x + 0.5, y + 0.5, 4.5]], "radius": 7, "label": 1, "plane": "xy"})
        return api(served.base, path)["layers"]["labels"]

    labels = stroke(30, 28)
    page, errors = _open(browser, served)
    red = lambda p: p[..., 0].mean() > 120 and p[..., 1].mean() < 80  # noqa: E731

    def rim_and_middle(layer, x, y):
        """A voxel on the stroke's outline (its rightmost) and its middle."""
        plane = label_slice(served.base, layer["id"], layer["version"], 4, (96, 96))
        right = int(np.nonzero(plane[y])[0].max())
        return [right + 0.5, y + 0.5, 4.5], [x + 0.5, y + 0.5, 4.5]

    rim, middle = rim_and_middle(labels, 30, 28)
    wait_for(lambda: red(pixels_around(page, [middle], radius=3)[0]), 60, "the stroke filled")
    outline = page.locator("#iw-label-outline")
    wait_for(outline.is_visible, 10, "the outline option")
    assert not outline.is_checked()
    outline.check()

    def outlined(rim, middle):
        rim_patch, middle_patch = pixels_around(page, [rim, middle], radius=2)
        # the one-voxel rim (4 pixels wide here) shows red; the middle is the dark data
        rim_red = (rim_patch[..., 0] > 150) & (rim_patch[..., 1] < 80)
        return rim_red.sum() >= 4 and middle_patch[..., 0].max() < 60
    wait_for(lambda: outlined(rim, middle), 30, "the stroke drawn as its outline")
    page.screenshot(path=str(artifacts / "labels-outline.png"))
    url = page.evaluate("ilastikWeb.ng.sourceUrlOf(ilastikWeb.ng.layerServing(ilastikWeb"
                        ".labelsLayerId))")
    assert url.rstrip("/").endswith(labels["version"] + "-outline"), url

    # a new stroke (a new labels revision) stays outlined
    newer = stroke(70, 28)
    rim2, middle2 = rim_and_middle(newer, 70, 28)
    wait_for(lambda: outlined(rim2, middle2) and outlined(rim, middle), 60,
             "the new stroke outlined too")
    url = page.evaluate("ilastikWeb.ng.sourceUrlOf(ilastikWeb.ng.layerServing(ilastikWeb"
                        ".labelsLayerId))")
    assert url.rstrip("/").endswith(newer["version"] + "-outline"), url
    # and back to filled
    outline.uncheck()
    wait_for(lambda: red(pixels_around(page, [middle2], radius=3)[0]), 30, "filled again")
    assert not errors, errors
    page.close()
