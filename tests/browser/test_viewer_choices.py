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
