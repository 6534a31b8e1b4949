"""What a user sees on real-world data: a corrupt chunk blanks only itself and is named in
a notice; a missing voxel size is a visible warning; two channels show in two colours."""

from __future__ import annotations

import numpy as np
import pytest
from paint_helpers import PANEL, drag, pixels_around, wait_for, xy_panel_box

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def test_corrupt_chunk_blanks_one_chunk_with_a_notice(serve, browser, corrupt_zarr, artifacts):
    path, data, bad = corrupt_zarr
    served = serve(str(path))
    page, errors = _page(browser)
    page.goto(served.url)
    notice = page.locator("#iw-notices")
    wait_for(lambda: notice.is_visible() and "unreadable" in notice.inner_text(), 60,
             "the unreadable-chunk notice")
    text = notice.inner_text()
    assert str(path) in text and "z 16-32, y 0-64, x 64-128" in text, text
    assert "Truncated Zstd" in text
    # the missing voxel size is a visible warning with the hint, and in the log
    assert "--voxel-size" in text
    assert "--voxel-size" in served.log_text()

    # the view shows data everywhere but in the bad chunk (viewer at z = 16)
    z = 16.5
    def looks_right():
        bad_patch, good_patch = pixels_around(page, [[96, 32, z], [32, 96, z]])
        return bad_patch.max() < 10 and good_patch.std() > 20
    wait_for(looks_right, 60, "the bad chunk black and the rest showing data")
    page.screenshot(path=str(artifacts / "corrupt-chunk.png"))
    log = served.log_text()
    assert log.count("unreadable chunk z, y, x [16:32, 0:64, 64:128]") == 1, log
    assert "Traceback" not in log
    assert served.process.poll() is None
    assert not errors, errors
    page.close()


def test_two_channel_volume_shows_two_colours(serve, browser, tmp_path, artifacts):
    import tifffile

    # channel 0 bright on the left half, channel 1 bright on the right, both uint16 and
    # in very different ranges: one range over both would leave channel 0 black
    rng = np.random.default_rng(3)
    data = np.zeros((2, 8, 128, 128), np.uint16)
    data[0] = rng.integers(0, 50, data.shape[1:])
    data[0, :, :, :64] += 300
    data[1] = rng.integers(0, 500, data.shape[1:])
    data[1, :, :, 64:] += 20000
    path = tmp_path / "two.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "CZYX"}, ome=True)
    served = serve(str(path), "--voxel-size", "100,50,50")
    page, errors = _page(browser)
    page.goto(served.url)

    def colours():
        left, right = pixels_around(page, [[32, 64, 4.5], [96, 64, 4.5]])
        lr, rr = left.mean(axis=(0, 1)), right.mean(axis=(0, 1))
        # left: channel 0 in green; right: channel 1 in magenta (red + blue)
        if lr[1] > 120 and lr[0] < 80 and rr[0] > 120 and rr[2] > 120 and rr[1] < 80:
            return lr, rr
        return None
    wait_for(colours, 60, "channel 0 green on the left, channel 1 magenta on the right")
    page.screenshot(path=str(artifacts / "two-channels.png"))

    # the channel panel: per-channel ranges from that channel's percentiles
    rows = page.locator("#iw-channels .iw-channel")
    wait_for(lambda: rows.count() == 2, 30, "two channel rows")
    low0, high0 = (float(v) for v in rows.nth(0).locator(".iw-channel-range").evaluate_all(
        "els => els.map(e => e.value)"))
    low1, high1 = (float(v) for v in rows.nth(1).locator(".iw-channel-range").evaluate_all(
        "els => els.map(e => e.value)"))
    assert high0 < 400 and low1 < 600 and high1 > 20000, (low0, high0, low1, high1)
    # hide channel 1: the right half goes dark; recolour channel 0 red
    rows.nth(1).locator(".iw-channel-show").uncheck()
    def right_dark():  # away from the red crosshair line at y = 64
        _, right = pixels_around(page, [[32, 100, 4.5], [96, 100, 4.5]])
        return right[..., 0].max() < 10 and right[..., 2].max() < 10  # no magenta left
    wait_for(right_dark, 30, "channel 1 hidden")
    rows.nth(0).locator(".iw-channel-color").evaluate(
        "(e) => { e.value = '#ff0000'; e.dispatchEvent(new Event('change')); }")
    def left_red():
        left, _ = pixels_around(page, [[32, 100, 4.5], [96, 100, 4.5]])
        m = left.mean(axis=(0, 1))
        return m[0] > 120 and m[1] < 60
    wait_for(left_red, 30, "channel 0 red")
    # a narrower range on channel 0 from the panel: Neuroglancer's state follows
    rows.nth(0).locator(".iw-channel-range").nth(1).fill("200")
    rows.nth(0).locator(".iw-channel-range").nth(1).dispatch_event("change")
    wait_for(lambda: page.evaluate("""viewer.state.toJSON().layers[0]
      .shaderControls.contrast0.range[1]""") == 200, 10, "the range in the layer state")
    page.screenshot(path=str(artifacts / "two-channels-edited.png"))
    assert not errors, errors
    page.close()


def test_painting_while_moving_gives_no_state_errors(serve, browser, tmp_path):
    """Strokes publish new label versions while the user moves the view: the state
    protocol rebases instead of answering 412, so the console stays clean."""
    import tifffile

    rng = np.random.default_rng(1)
    tifffile.imwrite(tmp_path / "blobs.tif", rng.integers(0, 255, (8, 128, 128), np.uint8))
    served = serve(str(tmp_path / "blobs.tif"), "--voxel-size", "40,8,8", project=True)
    page, errors = _page(browser)
    statuses: list[int] = []
    console: list[str] = []
    page.on("response", lambda r: statuses.append(r.status) if "/state/" in r.url else None)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(served.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=60_000)
    page.evaluate("""viewer.state.children.get("layout").restoreState("xy")""")
    page.wait_for_selector(PANEL)
    page.keyboard.press("p")
    box = xy_panel_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for i in range(8):
        y = cy - 60 + 15 * i
        drag(page, [[cx - 50, y], [cx, y], [cx + 50, y]])
        page.mouse.wheel(0, 100 if i % 2 else -100)  # move while the new labels publish
        page.mouse.move(cx + 5 * i, cy)
    wait_for(lambda: page.evaluate("ilastikWeb.brush.pending.length") == 0, 60,
             "every stroke shown by the labels layer")
    wait_for(lambda: len(statuses) >= 8, 30, "state posts")
    assert 412 not in statuses, statuses
    assert not [m for m in console if "412" in m or "Precondition" in m], console
    assert not errors, errors
    page.close()


def test_tensorstore_n5_container_opens_with_a_voxel_size_warning(serve, browser,
                                                                  tensorstore_n5):
    container, _, _ = tensorstore_n5
    served = serve(str(container))
    page, errors = _page(browser)
    page.goto(served.url)
    wait_for(lambda: page.locator(".neuroglancer-layer-item-label").count() > 0, 60,
             "the layer bar")
    assert page.locator(".neuroglancer-layer-item-label").first.inner_text() == "raw"
    notice = page.locator("#iw-notices")
    wait_for(lambda: notice.is_visible(), 60, "the voxel-size warning")
    assert "no voxel size" in notice.inner_text() and "--voxel-size" in notice.inner_text()
    assert "no voxel size" in served.log_text()
    assert not errors, errors
    page.close()


def test_rgb_image_displays_as_rgb(serve, browser, tmp_path):
    import tifffile

    rgb = np.zeros((4, 96, 96, 3), np.uint8)
    rgb[:, :, :48] = (230, 120, 20)  # orange
    rgb[:, :, 48:] = (20, 60, 200)  # blue
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    served = serve(str(tmp_path / "rgb.tif"), "--voxel-size", "100,50,50")
    page, errors = _page(browser)
    page.goto(served.url)

    def true_colours():
        left, right = (p.mean(axis=(0, 1)) for p in
                       pixels_around(page, [[24, 80, 2.5], [72, 80, 2.5]]))
        ok = (np.abs(left - (230, 120, 20)).max() < 25 and
              np.abs(right - (20, 60, 200)).max() < 25)
        return ok
    wait_for(true_colours, 60, "the RGB colours as stored")
    assert not errors, errors
    page.close()
