"""Helpers for the painting test: the project API, label chunks, screen/voxel mapping."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

PANEL = ".neuroglancer-rendered-data-panel"

# JavaScript run in the page: the xy cross-section panel, found through the extension.
_XY_PANEL = """(() => {
  const ng = window.ilastikWeb.ng;
  return ng.panels().find((p) => p.sliceView !== undefined && ng.planeOf(p) === "xy");
})()"""


def api(base: str, path: str, method: str = "GET", body: Any = None) -> Any:
    """JSON from the server's HTTP API."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
             explain: Callable[[], str] | None = None):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` (and
    what ``explain()`` then says: the server's state, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def xy_panel_box(page) -> dict:
    """The xy panel's bounding box in page pixels: {x, y, width, height}."""
    return page.evaluate(f"""(() => {{
      const r = {_XY_PANEL}.element.getBoundingClientRect();
      return {{x: r.left, y: r.top, width: r.width, height: r.height}};
    }})()""")


def screen_points(page, voxels_xyz: list[list[float]]) -> list[list[float]]:
    """Page pixel coordinates of voxel points in the xy panel."""
    return page.evaluate(f"""(voxels) => {{
      const panel = {_XY_PANEL};
      const r = panel.element.getBoundingClientRect();
      return voxels.map((v) => {{
        const s = window.ilastikWeb.ng.screenOf(panel, v);
        return [r.left + s[0], r.top + s[1]];
      }});
    }}""", voxels_xyz)


def voxels_under(page, points: list[list[float]]) -> list[list[float]]:
    """The viewer's mouse position (voxels, x y z) at each page point of the xy panel."""
    return page.evaluate(f"""(points) => {{
      const panel = {_XY_PANEL};
      return points.map((p) => window.ilastikWeb.ng.voxelAt(panel, p[0], p[1]));
    }}""", points)


def drag(page, points: list[list[float]], steps: int = 3) -> None:
    """A real left-button drag through ``points`` (page pixels)."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=steps)
    page.mouse.up()


def label_slice(base: str, layer_id: str, version: str, z: int, shape_xy: tuple[int, int]
                ) -> np.ndarray:
    """Full-resolution labels of slice ``z`` as (y, x), read chunk by chunk over HTTP."""
    prefix = f"{base}/precomputed/{layer_id}/{version}"
    with urllib.request.urlopen(prefix + "/info", timeout=30) as response:
        info = json.loads(response.read())
    scale = info["scales"][0]
    cx, cy, _ = scale["chunk_sizes"][0]
    dtype = np.dtype(info["data_type"]).newbyteorder("<")
    nx, ny = shape_xy
    out = np.zeros((ny, nx), dtype=dtype)
    for y0 in range(0, ny, cy):
        for x0 in range(0, nx, cx):
            x1, y1 = min(x0 + cx, nx), min(y0 + cy, ny)
            url = f"{prefix}/{scale['key']}/{x0}-{x1}_{y0}-{y1}_{z}-{z + 1}"
            with urllib.request.urlopen(url, timeout=60) as response:
                chunk = np.frombuffer(response.read(), dtype=dtype)
            out[y0:y1, x0:x1] = chunk.reshape(y1 - y0, x1 - x0)
    return out


def distance_to_path(path_xy: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Distance of every voxel centre (x+0.5, y+0.5) to the polyline ``path_xy`` (n, 2)."""
    ys, xs = np.mgrid[0:shape_yx[0], 0:shape_yx[1]]
    centres = np.stack([xs + 0.5, ys + 0.5], axis=-1).astype(np.float64)
    best = np.full(shape_yx, np.inf)
    segments = list(zip(path_xy[:-1], path_xy[1:], strict=True)) or [(path_xy[0], path_xy[0])]
    for a, b in segments:
        ab = b - a
        length2 = float(ab @ ab)
        t = np.zeros(shape_yx) if length2 == 0 else np.clip(((centres - a) @ ab) / length2, 0, 1)
        nearest = a + t[..., None] * ab
        best = np.minimum(best, np.linalg.norm(centres - nearest, axis=-1))
    return best


def longest_run(mask: np.ndarray, margin: int, window: tuple[int, int, int, int]
                ) -> tuple[int, int, int]:
    """(y, x_start, x_stop) of the longest horizontal run of ``mask`` eroded by ``margin``
    inside ``window`` = (x0, x1, y0, y1)."""
    x0, x1, y0, y1 = window
    eroded = ndimage.binary_erosion(mask, iterations=margin)
    best = (0, 0, 0)
    for y in range(y0, y1):
        row = np.concatenate([[False], eroded[y, x0:x1], [False]])
        edges = np.flatnonzero(np.diff(row.astype(np.int8)))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if stop - start > best[2] - best[1]:
                best = (y, x0 + start, x0 + stop)
    return best


def panel_image(page, index: int) -> np.ndarray:
    """RGB pixels of data panel ``index``."""
    png = page.locator(PANEL).nth(index).screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def save_for_docs(png_path, out_path, width: int = 760) -> None:
    """A downscaled JPEG copy of a screenshot for the README walk-through."""
    image = Image.open(png_path).convert("RGB")
    height = round(image.height * width / image.width)
    image.resize((width, height), Image.LANCZOS).save(out_path, quality=72, optimize=True)


def pixels_around(page, points_xyz, radius=6) -> list[np.ndarray]:
    """RGB page pixels in a square of ``radius`` around each voxel point of the xy panel."""
    screen = screen_points(page, points_xyz)
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"), np.float64)
    return [shot[int(y) - radius:int(y) + radius, int(x) - radius:int(x) + radius]
            for x, y in screen]
