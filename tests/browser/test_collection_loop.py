"""The annotation loop of an image collection in the real viewer: headless Chromium, real
mouse, the real CLI (``serve --collection``) with a tiny randomly initialised SAM.

Open a collection of two images; annotate the first with a SAM prompt (a dragged box, Enter);
move to the second with the Next button and annotate it; export a training set (TIFF folders
and OME-Zarr) with the panel's button and read the files back with tifffile and ome-zarr's
reader; train the pixel classifier across both items. Mask content is never asserted (the
weights are random); what is asserted is where each thing went.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from paint_helpers import api, drag, screen_points, wait_for, xy_panel_box
from server_process import stop_server

from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sam.instance_geometry import polygon_mask

pytestmark = [pytest.mark.browser, pytest.mark.slow]

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

_SAM_TESTS = str(Path(__file__).resolve().parents[1] / "sam")
if _SAM_TESTS not in sys.path:
    sys.path.insert(0, _SAM_TESTS)
from sam_fixtures import blobs, build_tiny_sam  # noqa: E402

SHAPE = (96, 128)  # y, x of each item

_LAYER_URL = """(id) => ilastikWeb.ng.sourceUrlOf(ilastikWeb.ng.layerServing(id)) || ''"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def collection_server(tmp_path) -> Iterator[dict]:
    images = tmp_path / "images"
    images.mkdir()
    for n, name in enumerate(("first", "second")):
        data = blobs((1, *SHAPE), seed=n)[0]
        tifffile.imwrite(images / f"{name}.tif",
                         (data * 255 / max(1, data.max())).astype(np.uint8))
    tiny = tmp_path / "tiny_vit_b.pt"
    torch.save(build_tiny_sam().state_dict(), tiny)
    port = _free_port()
    env = {**os.environ, "ILASTIK_WEB_DATA": str(tmp_path / "data")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", "--collection", str(images),
         "--port", str(port), "--no-browser", "--log-level", "WARNING", "--workers", "4",
         "--sam-device", "cpu", "--sam-model", f"tiny=vit_b:{tiny}"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)} before printing its URL")
        yield {"url": url, "base": f"http://127.0.0.1:{port}", "images": images}
    finally:
        stop_server(process)


def _annotate_with_sam(page, item_id: str, class_name: str) -> dict:
    """Drag a SAM box in the middle of the xy panel, wait for the preview, press Enter;
    returns the server's answer to the accept."""
    page.fill("#iw-coll-class", class_name)
    if not page.evaluate("ilastikWeb.sam.mode"):
        page.click("#iw-sam")  # also takes the focus out of the text field
    assert page.evaluate("ilastikWeb.sam.mode") is True
    box = xy_panel_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = page.evaluate("ilastikWeb.sam.lastAccept && ilastikWeb.sam.lastAccept.objects"
                           " && ilastikWeb.sam.lastAccept.objects.version") or ""
    with page.expect_request(lambda r: r.url.endswith("/api/sam/prompt")) as caught:
        drag(page, [[cx - 60, cy - 45], [cx + 50, cy + 40]], steps=6)
    prompt = json.loads(caught.value.post_data)
    view = page.evaluate("ilastikWeb.collection.view")
    assert prompt["layer_id"] == "collection" and prompt["version"] == view["image"]["version"]
    assert view["item"]["id"] == item_id and "project_id" not in prompt
    page.wait_for_function("ilastikWeb.sam.busy === 0 && ilastikWeb.sam.preview !== null",
                           timeout=60_000)
    assert page.evaluate("ilastikWeb.sam.preview.voxels") > 0
    with page.expect_response(lambda r: f"/api/collection/items/{item_id}/objects" in r.url
                              ) as answer:
        page.keyboard.press("Enter")
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function("(b) => ilastikWeb.sam.lastAccept && ilastikWeb.sam.preview === null"
                           " && ilastikWeb.sam.lastAccept.objects.version !== b",
                           arg=before, timeout=30_000)
    accepted = page.evaluate("ilastikWeb.sam.lastAccept")
    # The viewer's objects layer now shows the item's new objects version.
    page.wait_for_function(f"(v) => ({_LAYER_URL})('collection-objects').indexOf(v) !== -1",
                           arg=accepted["objects"]["version"], timeout=20_000)
    return accepted


def _annotate_with_polygon(page, images: Path, item_id: str, class_name: str) -> dict:
    """Pick the polygon tool, click four vertices around the xy panel's centre, press
    Enter; check the item's annotation on disk, then undo and redo it from the panel's
    object tools. Returns the item's view."""
    page.fill("#iw-coll-class", class_name)
    page.click("#iw-inst-polygon")  # also leaves SAM mode and the text field
    page.wait_for_function("(i) => ilastikWeb.instances.layer !== null "
                           "&& ilastikWeb.instances.layer.item_id === i", arg=item_id,
                           timeout=30_000)
    assert page.evaluate("ilastikWeb.sam.mode") is False
    cx, cy, cz = page.evaluate("""(() => { const ng = ilastikWeb.ng;
      const p = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      return ng.panelCenter(p); })()""")
    corners = [[cx - 9.3, cy - 7.2, cz], [cx + 8.1, cy - 6.7, cz], [cx + 7.6, cy + 8.4, cz],
               [cx - 8.7, cy + 6.9, cz]]
    for x, y in screen_points(page, corners):
        page.mouse.click(x, y)
    drafted = page.evaluate("ilastikWeb.instances.draft.vertices")
    assert len(drafted) == 4
    before = page.evaluate("ilastikWeb.collection.view.objects.version")
    with page.expect_response(lambda r: "/api/instances/collection-objects/polygon" in r.url
                              ) as answer:
        page.keyboard.press("Enter")
    assert answer.value.status == 200, answer.value.text()
    assert f"version={before}" in answer.value.url
    result = answer.value.json()
    assert result["object_id"] == 1 and result["version"] != before
    # The panel follows the item's new version, and so does the viewer's objects layer.
    page.wait_for_function("(v) => ilastikWeb.collection.view.objects.version === v",
                           arg=result["version"], timeout=20_000)
    page.wait_for_function(f"(v) => ({_LAYER_URL})('collection-objects').indexOf(v) !== -1",
                           arg=result["version"], timeout=20_000)
    stored = json.loads((images / "annotations" / f"{item_id}.json").read_text())
    assert stored["classes"] == {"1": class_name} and stored["sources"] == {"1": "polygon"}
    labels = tifffile.imread(images / "annotations" / f"{item_id}.tif")
    ref = SliceRef(labels.shape, "xy", int(np.floor(cz)))
    box, mask = polygon_mask(ref, drafted)
    expected = np.zeros(labels.shape, np.uint32)
    expected[box.slices][mask] = 1
    np.testing.assert_array_equal(labels, expected)
    assert expected.sum() > 150

    # Undo and redo (the item's own history) go through to annotations/ as well.
    page.evaluate("ilastikWeb.instances.undo()")
    page.wait_for_function("ilastikWeb.collection.view.object_list.length === 0",
                           timeout=20_000)
    assert not (images / "annotations" / f"{item_id}.json").exists()
    page.evaluate("ilastikWeb.instances.redo()")
    page.wait_for_function("ilastikWeb.collection.view.object_list.length === 1",
                           timeout=20_000)
    np.testing.assert_array_equal(
        tifffile.imread(images / "annotations" / f"{item_id}.tif"), expected)
    page.click("#iw-inst-polygon")  # tools off
    return page.evaluate("ilastikWeb.collection.view")


def _run_export(page, layout: str) -> dict:
    before = page.evaluate("ilastikWeb.collection.lastExport") or {}
    page.select_option("#iw-coll-layout", layout)
    page.fill("#iw-coll-val", "0.5")
    page.click("#iw-coll-export")
    page.wait_for_function("(b) => ilastikWeb.collection.lastExport "
                           "&& ilastikWeb.collection.lastExport.path !== b",
                           arg=before.get("path", ""), timeout=60_000)
    return page.evaluate("ilastikWeb.collection.lastExport")


def test_collection_annotate_two_items_and_export(collection_server, browser, artifacts):
    base, images = collection_server["base"], collection_server["images"]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(collection_server["url"])
    page.wait_for_function("window.ilastikWeb && ilastikWeb.viewReady && ilastikWeb.collection "
                           "&& ilastikWeb.collection.ready && ilastikWeb.sam "
                           "&& ilastikWeb.sam.unavailable === null", timeout=90_000)
    # The first item nobody annotated, claimed for this user, in the viewer.
    view = page.evaluate("ilastikWeb.collection.view")
    assert view["item"]["id"] == "first" and view["item"]["mine"]
    assert view["image"]["version"] in page.evaluate(_LAYER_URL, "collection")
    assert page.inner_text("#iw-coll-item").startswith("1 / 2")
    assert page.evaluate("viewer.state.toJSON().layout") == "xy"  # 2D items
    page.evaluate("viewer.state.children.get('crossSectionScale').restoreState(0.25)")
    time.sleep(1.0)

    # Item 1: a SAM box, accepted as a "cell".
    first = _annotate_with_sam(page, "first", "cell")
    assert first["object_id"] == 1 and first["item"]["annotated"]
    stored = json.loads((images / "annotations" / "first.json").read_text())
    assert stored["classes"] == {"1": "cell"} and stored["sources"] == {"1": "sam"}
    first_labels = tifffile.imread(images / "annotations" / "first.tif")
    assert first_labels.shape == (1, *SHAPE) and (first_labels == 1).any()
    wait_for(lambda: page.query_selector("#iw-coll-items [data-item=first]"
                                         "[data-annotated=true]"), 10, "item 1 marked done")
    page.screenshot(path=str(artifacts / "collection-1-first.png"))

    # Item 2: the Next button (a real click) switches the viewer's layers to its versions.
    page.click("#iw-coll-next")
    page.wait_for_function("ilastikWeb.collection.view.item.id === 'second'", timeout=20_000)
    second_view = page.evaluate("ilastikWeb.collection.view")
    assert second_view["image"]["version"] != view["image"]["version"]
    page.wait_for_function(f"(v) => ({_LAYER_URL})('collection').indexOf(v) !== -1",
                           arg=second_view["image"]["version"], timeout=20_000)
    assert page.inner_text("#iw-coll-item").startswith("2 / 2")
    assert not second_view["item"]["annotated"] and second_view["object_list"] == []

    # Item 2: the polygon tool, real clicks on four vertices, Enter commits.
    second = _annotate_with_polygon(page, images, "second", "cell")
    expected_source = "polygon"
    assert second["item"]["annotated"]
    stored = json.loads((images / "annotations" / "second.json").read_text())
    assert set(stored["sources"].values()) == {expected_source}
    page.screenshot(path=str(artifacts / "collection-2-second.png"))
    status = {i["id"]: i for i in api(base, "/api/collection")["items"]}
    assert status["first"]["annotated"] and status["second"]["annotated"]

    # Previous goes back to item 1 with its object still there.
    page.click("#iw-coll-prev")
    page.wait_for_function("ilastikWeb.collection.view.item.id === 'first'", timeout=20_000)
    assert page.evaluate("ilastikWeb.collection.view.object_list.length") == 1

    # Export: TIFF folders, then OME-Zarr, split by item.
    exported = _run_export(page, "tiff")
    out = Path(exported["path"])
    assert out.parent == images / "annotations" / "training-sets"
    assert sorted(exported["splits"].values()) == ["train", "val"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["cell"]
    for entry in manifest["items"]:
        image = tifffile.imread(out / entry["image"])
        labels = tifffile.imread(out / entry["labels"])
        assert image.shape == labels.shape == SHAPE
        source = tifffile.imread(images / f"{entry['item']}.tif").reshape(SHAPE)
        assert np.array_equal(image, source)
        annotation = tifffile.imread(images / "annotations" / f"{entry['item']}.tif")[0]
        assert np.array_equal(labels, annotation) and labels.max() >= 1
        assert entry["objects"] == [{"id": 1, "class": "cell",
                                     "source": {"first": "sam", "second": "polygon"}[
                                         entry["item"]]}]
        assert entry["split"] == exported["splits"][entry["item"]]

    zarr_export = _run_export(page, "ome-zarr")
    assert zarr_export["layout"] == "ome-zarr"
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    zarr_out = Path(zarr_export["path"])
    for item, split in zarr_export["splits"].items():
        # The reader finds the image and, through its labels/ group, the instance labels.
        nodes = list(Reader(parse_url(str(zarr_out / split / f"{item}.ome.zarr")))())
        image = np.asarray(nodes[0].data[0])
        assert image.shape == (1, 1, *SHAPE)
        assert np.array_equal(image[0, 0],
                              tifffile.imread(images / f"{item}.tif").reshape(SHAPE))
        (instances,) = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
        labels = np.asarray(instances.data[0])
        annotation = tifffile.imread(images / "annotations" / f"{item}.tif")
        assert np.array_equal(labels, annotation)

    # Pixel classification across both items; the current item gets a prediction layer.
    page.click("#iw-coll-train")
    page.wait_for_function("ilastikWeb.collection.lastTraining !== null", timeout=120_000)
    trained = page.evaluate("ilastikWeb.collection.lastTraining")
    assert set(trained["items"]) == {"first", "second"}
    page.wait_for_function("ilastikWeb.collection.view.prediction !== null", timeout=20_000)
    page.screenshot(path=str(artifacts / "collection-3-exported.png"))

    # Fine-tune on the collection's annotations from the Jobs panel (a few CPU steps of
    # micro-sam's trainer, a job on the local engine), use the checkpoint, prompt with it.
    assert page.evaluate("ilastikWeb.jobs.target.kind") == "collection"
    page.fill("#iw-sam-job-set", out.name)  # the TIFF set exported above
    page.fill("#iw-sam-job-name", "round2")
    page.fill("#iw-sam-job-steps", "2")
    with page.expect_response(lambda r: r.url.endswith("/api/collection/jobs/sam-finetune")
                              ) as answer:
        page.click("#iw-sam-job-finetune")
    assert answer.value.status == 201, answer.value.text()
    job = answer.value.json()
    assert job["kind"] == "sam-finetune" and job["source"] == str(out.resolve())
    row = '.iw-job[data-job="' + job["id"] + '"]'
    page.wait_for_selector(f'{row}[data-state="DONE"]', timeout=600_000)
    assert (images / "annotations" / "models" / "round2.pt").is_file()
    page.click(f"{row} .iw-job-sam-model")
    page.wait_for_function("ilastikWeb.sam.model === 'round2'", timeout=30_000)
    with page.expect_request(lambda r: r.url.endswith("/api/sam/prompt")) as caught:
        _annotate_with_sam_preview_only(page)
    assert json.loads(caught.value.post_data)["model"] == "round2"
    page.screenshot(path=str(artifacts / "collection-4-round2.png"))
    assert errors == [], errors


def _annotate_with_sam_preview_only(page) -> None:
    if not page.evaluate("ilastikWeb.sam.mode"):
        page.click("#iw-sam")
    box = xy_panel_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    drag(page, [[cx - 40, cy - 30], [cx + 40, cy + 30]], steps=6)
    page.wait_for_function("ilastikWeb.sam.busy === 0 && ilastikWeb.sam.preview !== null",
                           timeout=60_000)
