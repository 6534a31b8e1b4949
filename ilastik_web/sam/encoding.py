"""Compact encodings of 2D masks: run lengths over their bounding box, and polygons.

Run-length encoding: the mask is cropped to its bounding box, read in C order (rows
of the slice image, then columns) and written as alternating run lengths starting with
a run of zeros (which may be 0 long). Polygons trace the boundary between mask and
background through the midpoints between pixel centres, so the pixel centres inside
the polygons (even-odd rule over all rings, holes included) are exactly the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ilastik_web.errors import InvalidRequestError

#: Largest image (rows * columns) a run-length encoding may describe.
MAX_DECODED_PIXELS = 1 << 28


def encode_rle(mask: np.ndarray) -> list[int]:
    """Run lengths of a boolean array in C order, starting with a run of False."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def decode_rle(counts: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The boolean array of ``shape`` that :func:`encode_rle` wrote as ``counts``."""
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise InvalidRequestError(f"mask shape {shape} has a negative side")
    size = int(np.prod(shape)) if shape else 1
    if size > MAX_DECODED_PIXELS:
        raise InvalidRequestError(f"mask of shape {shape} is too large")
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any() or int(runs.sum()) != size:
        raise InvalidRequestError(f"run lengths do not add up to the mask size {size}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(shape)


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove vertices lying on the straight line through their neighbours (lossless)."""
    if len(ring) < 4:
        return ring
    prev, nxt = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - prev[:, 1]) - (
        ring[:, 1] - prev[:, 1]
    ) * (nxt[:, 0] - prev[:, 0])
    keep = np.abs(cross) > 1e-9
    return ring[keep] if keep.sum() >= 3 else ring


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed rings, each (n, 2) continuous (column, row) coordinates, outlining a 2D mask.

    Pixel ``(r, c)`` has its centre at ``(c + 0.5, r + 0.5)``. Rings are not repeated at
    their end; outer boundaries and holes are both rings (fill with the even-odd rule).
    """
    from skimage.measure import find_contours

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise InvalidRequestError(f"polygons need a 2D mask, got {mask.ndim}D")
    if not mask.any():
        return []
    padded = np.pad(mask, 1).astype(np.float32)
    rings = []
    for contour in find_contours(padded, 0.5):
        ring = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        # contour is (row, col) in padded index space; index i is the centre i - 1 + 0.5.
        ring_cr = ring[:, ::-1] - 0.5
        rings.append(_drop_collinear(ring_cr))
    return rings


def polygons_contain(rings: Sequence[np.ndarray], points_cr: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of (n, 2) (column, row) points against rings."""
    points = np.asarray(points_cr, dtype=np.float64).reshape(-1, 2)
    inside = np.zeros(len(points), dtype=bool)
    x, y = points[:, 0], points[:, 1]
    for ring in rings:
        a = np.asarray(ring, dtype=np.float64)
        b = np.roll(a, -1, axis=0)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            crosses = (ya > y) != (yb > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_cross = xa + (y - ya) * (xb - xa) / (yb - ya)
            inside ^= crosses & (x < x_cross)
    return inside


def ring_area(ring: np.ndarray) -> float:
    """Signed shoelace area of a closed ring."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
