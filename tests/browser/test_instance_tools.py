"""The object tools in the real viewer: headless Chromium, real mouse events, the real CLI.

Pick the polygon tool, click four vertices in the xy panel, drag one of them elsewhere
(vertices stay editable until committed), press Enter: the served instance layer holds
exactly the voxels whose centres lie in the polygon the viewer reported, the viewer shows
the layer at its new version, and the panel's Undo takes the object back. Then cut an
object in two with the cutter, select both by clicking and merge them, grow it with the
object brush, erase from it, and undo with Ctrl+Z.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from paint_helpers import PANEL, api, label_slice, screen_points, voxels_under, wait_for

from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sam.instance_geometry import polygon_mask

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHAPE = (8, 96, 96)  # z, y, x
SCALE = 0.25  # voxels per screen pixel


@pytest.fixture
def project_server(serve, tmp_path):
    rng = np.random.default_rng(4)
    tifffile.imwrite(tmp_path / "cells.tif", rng.integers(0, 255, SHAPE, np.uint8))
    served = serve(str(tmp_path / "cells.tif"), project=True)
    served.project = api(served.base, "/api/projects")["projects"][0]["id"]
    return served


def _viewer_source_of(page, layer_id):
    return page.evaluate("""(id) => {
      const layer = viewer.state.toJSON().layers.find((l) => l.name === id);
      if (!layer) return null;
      const source = layer.source;
      return typeof source === "string" ? source : (source.url || JSON.stringify(source));
    }""", layer_id)


def test_polygon_with_real_mouse_events_then_undo(project_server, browser):
    served = project_server
    base, project = served.base, served.project
    layer_id = f"project-{project}-sam-objects"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=60_000)
    page.wait_for_selector(PANEL)
    page.evaluate(f"""(() => {{
      viewer.state.children.get("layout").restoreState("xy");
      viewer.state.children.get("crossSectionScale").restoreState({SCALE});
    }})()""")
    page.wait_for_function("""(() => { const ng = ilastikWeb.ng;
      const p = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      return p && p.element.clientWidth > 100; })()""", timeout=30_000)

    page.click("#iw-inst-polygon")
    wait_for(lambda: page.evaluate("ilastikWeb.instances.layer !== null"), 30,
             "the instance layer to be made")
    centre = page.evaluate("""(() => { const ng = ilastikWeb.ng;
      const p = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      return ng.panelCenter(p); })()""")
    cx, cy, cz = centre
    z = int(np.floor(cz))
    corners = [[cx - 8.3, cy - 6.2, cz], [cx + 7.1, cy - 6.7, cz], [cx + 6.6, cy + 7.4, cz],
               [cx - 7.7, cy + 6.9, cz]]
    points = screen_points(page, corners)
    for x, y in points:
        page.mouse.click(x, y)
    assert page.evaluate("ilastikWeb.instances.draft.vertices.length") == 4
    # Drag the third vertex to a new place before committing.
    moved = screen_points(page, [[cx + 10.2, cy + 11.3, cz]])[0]
    page.mouse.move(*points[2])
    page.mouse.down()
    page.mouse.move(*moved, steps=4)
    page.mouse.up()
    assert page.evaluate("ilastikWeb.instances.draft.vertices.length") == 4
    reported = voxels_under(page, [points[0], points[1], moved, points[3]])
    drafted = page.evaluate("ilastikWeb.instances.draft.vertices")
    # Where the mouse went, to a screen pixel (the events carry whole pixels).
    np.testing.assert_allclose(np.array(drafted)[:, :2], np.array(reported)[:, :2],
                               atol=1.5 * SCALE)
    assert all(v[2] == z + 0.5 for v in drafted)  # on the slice's centre plane
    assert page.locator("#iw-inst-info").inner_text().endswith("Enter commits")
    page.keyboard.press("Enter")

    result = wait_for(lambda: page.evaluate("ilastikWeb.instances.lastResult"), 30,
                      "the polygon to be committed")
    assert result["changed"] and result["object_id"] == 1, result
    layer = api(base, f"/api/instances/{layer_id}")
    assert layer["objects"] == [{"id": 1, "source": "polygon", "sources": ["polygon"]}]
    served_ids = label_slice(base, layer_id, layer["version"], z, (SHAPE[2], SHAPE[1]))
    ref = SliceRef(SHAPE, "xy", z)
    box, mask = polygon_mask(ref, drafted)
    expected = np.zeros((SHAPE[1], SHAPE[2]), np.uint32)
    expected[box.start[1]:box.stop[1], box.start[2]:box.stop[2]][mask[0]] = 1
    np.testing.assert_array_equal(served_ids, expected)
    assert expected.sum() > 150  # the moved vertex made it bigger than the first square
    wait_for(lambda: layer["version"] in (_viewer_source_of(page, layer_id) or ""), 30,
             "the viewer to show the instance layer's new version")

    # The panel's Undo (the project's one history) takes the object back.
    page.wait_for_function("!document.getElementById('iw-undo').disabled", timeout=30_000)
    page.click("#iw-undo")
    undone = wait_for(lambda: (lambda l: l if not l["objects"] else None)(
        api(base, f"/api/instances/{layer_id}")), 30, "the undo")
    assert not label_slice(base, layer_id, undone["version"], z, (SHAPE[2], SHAPE[1])).any()
    wait_for(lambda: undone["version"] in (_viewer_source_of(page, layer_id) or ""), 30,
             "the viewer to follow the undo")
    assert errors == []
    page.close()


def _open_xy(browser, served):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.viewReady",
                           timeout=60_000)
    page.wait_for_selector(PANEL)
    page.evaluate(f"""(() => {{
      viewer.state.children.get("layout").restoreState("xy");
      viewer.state.children.get("crossSectionScale").restoreState({SCALE});
    }})()""")
    page.wait_for_function("""(() => { const ng = ilastikWeb.ng;
      const p = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      return p && p.element.clientWidth > 100; })()""", timeout=30_000)
    return page, errors


def test_select_cut_merge_brush_and_erase_with_the_mouse(project_server, browser):
    served = project_server
    base, project = served.base, served.project
    layer_id = f"project-{project}-sam-objects"
    page, errors = _open_xy(browser, served)
    cx, cy, cz = page.evaluate("""(() => { const ng = ilastikWeb.ng;
      const p = ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
      return ng.panelCenter(p); })()""")
    z = int(np.floor(cz))

    def objects():
        return {o["id"]: o for o in api(base, f"/api/instances/{layer_id}")["objects"]}

    def ids_now():
        layer = api(base, f"/api/instances/{layer_id}")
        return label_slice(base, layer_id, layer["version"], z, (SHAPE[2], SHAPE[1]))

    def click(*voxels):
        for x, y in screen_points(page, [list(v) for v in voxels]):
            page.mouse.click(x, y)

    def edits_done(count):
        page.wait_for_function(f"ilastikWeb.instances.busy === 0 && "
                               f"ilastikWeb.instances.lastResult && "
                               f"ilastikWeb.instances.lastResult.revision >= {count}",
                               timeout=30_000)

    page.click("#iw-inst-polygon")
    click((cx - 10, cy - 6, cz), (cx + 10, cy - 6, cz), (cx + 10, cy + 6, cz),
          (cx - 10, cy + 6, cz))
    page.click("#iw-inst-commit")
    edits_done(1)
    first = ids_now()
    assert set(objects()) == {1} and (first == 1).sum() > 200

    # The cutter: a line across the object, from outside to outside, left of its middle.
    page.click("#iw-inst-cutter")
    assert page.evaluate("ilastikWeb.instances.selected") == 1  # the new polygon
    click((cx - 4.2, cy - 12, cz), (cx - 4.2, cy + 12, cz))
    page.keyboard.press("Enter")
    edits_done(2)
    cut = ids_now()
    assert set(objects()) == {1, 2}
    assert (cut == 2).sum() < (cut == 1).sum() and (cut == 2).sum() > 20
    assert ((cut > 0) <= (first > 0)).all()  # the cut moved voxels, added none

    # Select both by clicking (Shift for the second) and merge them back into one.
    page.click("#iw-inst-select")
    click((cx + 5, cy, cz))
    page.wait_for_function("ilastikWeb.instances.selected === 1", timeout=30_000)
    points = screen_points(page, [[cx - 8, cy, cz]])
    page.keyboard.down("Shift")
    page.mouse.click(*points[0])
    page.keyboard.up("Shift")
    page.wait_for_function("ilastikWeb.instances.second === 2", timeout=30_000)
    page.click("#iw-inst-merge")
    edits_done(3)
    merged = ids_now()
    assert set(objects()) == {1} and ((merged == 1) == (first == 1)).all()

    # The object brush grows the selected object; the eraser takes only its voxels.
    page.click("#iw-inst-brush")
    drag_points = screen_points(page, [[cx, cy, cz], [cx, cy + 14, cz]])
    page.mouse.move(*drag_points[0])
    page.mouse.down()
    page.mouse.move(*drag_points[1], steps=5)
    page.mouse.up()
    edits_done(4)
    grown = ids_now()
    assert (grown == 1).sum() > (merged == 1).sum()
    assert objects()[1]["sources"] == ["polygon", "brush"]
    page.click("#iw-inst-eraser")
    drag_points = screen_points(page, [[cx - 12, cy, cz], [cx + 12, cy, cz]])
    page.mouse.move(*drag_points[0])
    page.mouse.down()
    page.mouse.move(*drag_points[1], steps=5)
    page.mouse.up()
    edits_done(5)
    erased = ids_now()
    assert (erased == 1).sum() < (grown == 1).sum() and ((erased > 0) <= (grown > 0)).all()

    # Ctrl+Z takes back the eraser, then the brush.
    page.mouse.move(*drag_points[0])
    page.keyboard.press("Control+z")
    wait_for(lambda: (ids_now() == grown).all(), 30, "Ctrl+Z to undo the eraser")
    assert errors == []
    page.close()
