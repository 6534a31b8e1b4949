"""Geometry of the instance tools on one slice: polygons, cut lines, outlines.

Arrays in, arrays out. Vertices are viewer points (x, y, z) in the continuous voxel
coordinates of :mod:`ilastik_web.sam.geometry`: voxel ``i`` covers ``[i, i + 1)``, and a
voxel belongs to a polygon when its centre lies inside it (even-odd rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.measure import approximate_polygon, find_contours, points_in_poly

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.geometry import SliceRef

#: Most vertices one polygon or cut line may have.
MAX_VERTICES = 10_000


def _pixels(ref: SliceRef, vertices_xyz: Sequence[Sequence[float]], least: int) -> np.ndarray:
    points = np.asarray(vertices_xyz, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise InvalidRequestError("vertices must be a list of finite [x, y, z] points")
    if not least <= len(points) <= MAX_VERTICES:
        raise InvalidRequestError(f"give {least} to {MAX_VERTICES} vertices")
    return ref.to_pixels(points)  # (column, row)


def polygon_mask(ref: SliceRef, vertices_xyz: Sequence[Sequence[float]]) -> tuple[Box, np.ndarray]:
    """The voxels of slice ``ref`` whose centres lie inside the polygon.

    Returns
    -------
    box, mask
        A (z, y, x) box one voxel thick around the voxels hit, and a boolean mask shaped
        like it.

    Raises
    ------
    InvalidRequestError
        Fewer than 3 vertices, or no voxel centre inside the polygon (within the slice).
    """
    cr = _pixels(ref, vertices_xyz, 3)
    rows, cols = ref.image_shape
    r0 = max(0, int(np.floor(cr[:, 1].min())))
    r1 = min(rows, int(np.ceil(cr[:, 1].max())) + 1)
    c0 = max(0, int(np.floor(cr[:, 0].min())))
    c1 = min(cols, int(np.ceil(cr[:, 0].max())) + 1)
    if r0 >= r1 or c0 >= c1:
        raise InvalidRequestError("the polygon lies outside the slice")
    rr, cc = np.mgrid[r0:r1, c0:c1]
    centres = np.stack([cc.ravel() + 0.5, rr.ravel() + 0.5], axis=1)
    inside = points_in_poly(centres, cr).reshape(r1 - r0, c1 - c0)
    if not inside.any():
        raise InvalidRequestError("the polygon covers no voxel centre")
    image_box = Box.of_mask(inside).translate((r0, c0))
    sub = inside[image_box.translate((-r0, -c0)).slices]
    box = ref.box_of(image_box)
    return box, np.expand_dims(sub, ref.normal)


def polyline_mask(ref: SliceRef, vertices_xyz: Sequence[Sequence[float]]) -> np.ndarray:
    """The pixels of slice ``ref`` (its full image) that a polyline passes through.

    Consecutive vertices are joined by 8-connected digital lines, which separate the
    slice in the 4-connected sense.
    """
    cr = _pixels(ref, vertices_xyz, 2)
    rows, cols = ref.image_shape
    out = np.zeros((rows, cols), dtype=bool)
    # Lines may start and end outside the slice: draw on a grid padded to hold them.
    pix = np.floor(cr[:, ::-1]).astype(np.int64)  # (row, column)
    lo = np.minimum(pix.min(axis=0), 0)
    hi = np.maximum(pix.max(axis=0) + 1, (rows, cols))
    if (hi - lo).prod() > 1 << 24:
        raise InvalidRequestError("the cut line reaches too far outside the slice")
    canvas = np.zeros(tuple(hi - lo), dtype=bool)
    for (ra, ca), (rb, cb) in zip(pix[:-1] - lo, pix[1:] - lo, strict=True):
        rr, cc = draw_line(int(ra), int(ca), int(rb), int(cb))
        canvas[rr, cc] = True
    out[:] = canvas[-lo[0]:-lo[0] + rows, -lo[1]:-lo[1] + cols]
    return out


def split_region(region: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """The part of a 2D ``region`` that a ``cut`` (a line mask) separates from its largest
    part: every 4-connected piece of ``region & ~cut`` but the largest one.

    Raises
    ------
    InvalidRequestError
        The cut leaves the region in one piece.
    """
    rest = np.asarray(region, dtype=bool) & ~np.asarray(cut, dtype=bool)
    pieces, count = ndimage.label(rest)
    if count < 2:
        raise InvalidRequestError("the line does not cut the object apart on this slice: "
                                  "draw it across the object, from outside to outside")
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    return (pieces > 0) & (pieces != largest)


def outline(region: np.ndarray, tolerance: float = 0.0) -> list[np.ndarray]:
    """Closed outlines of a 2D boolean ``region``, as (n, 2) (column, row) vertex arrays in
    continuous pixel coordinates, largest first (simplified by ``tolerance`` pixels).

    Filling an outline with :func:`polygon_mask` gives the region back (without holes).
    """
    padded = np.pad(np.asarray(region, dtype=np.float64), 1)
    rings = []
    for contour in find_contours(padded, 0.5):
        ring = approximate_polygon(contour, tolerance) - 1 + 0.5  # back to centres
        if len(ring) >= 4:
            rings.append(ring[:-1, ::-1])  # (column, row), open ring
    rings.sort(key=lambda r: -_area(r))
    return rings


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)
