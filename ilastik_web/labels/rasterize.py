"""Turn brush strokes into voxel masks.

A stroke is a polyline of voxel-space points swept by a brush of a given radius, either
flat in one of the three viewer planes or as a 3D ball.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError

Plane = Literal["xy", "xz", "yz", "3d"]
PLANES: tuple[Plane, ...] = ("xy", "xz", "yz", "3d")
# The (z, y, x) axis each flat plane is perpendicular to.
_NORMAL_AXIS = {"xy": 0, "xz": 1, "yz": 2}
MAX_POINTS = 10_000
MAX_RADIUS = 256.0
#: Coordinates beyond this (in voxels) are refused: no volume is that large, and integer
#: arithmetic on them would overflow.
MAX_COORDINATE = float(1 << 31)
#: The most voxel tests one stroke may cost (the sum over its segments of the voxels in
#: each segment's bounding box, inside the volume): about a second of rasterising.
MAX_STROKE_VOXELS = 1 << 26


@dataclass(frozen=True)
class Stroke:
    """A brush stroke.

    Parameters
    ----------
    points
        Polyline vertices in voxel coordinates (z, y, x) of pyramid level 0; fractional
        values are voxel centres at integer + 0.5 exactly as Neuroglancer reports them.
    radius
        Brush radius in voxels (0.5 paints single voxels).
    label
        Class value 1..255, or 0 to erase.
    plane
        "xy", "xz" or "yz" for a flat stroke in that plane (the normal coordinate of the
        first point is used), or "3d" for a ball swept along the polyline.
    """

    points: tuple[tuple[float, float, float], ...]
    radius: float
    label: int
    plane: Plane = "xy"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        pts = tuple(tuple(float(c) for c in p) for p in self.points)
        if not pts:
            raise InvalidRequestError("a stroke needs at least one point")
        if len(pts) > MAX_POINTS:
            raise InvalidRequestError(f"a stroke has at most {MAX_POINTS} points")
        if any(len(p) != 3 or not all(abs(c) <= MAX_COORDINATE for c in p) for p in pts):
            raise InvalidRequestError(
                f"stroke points must be finite (z, y, x) triples within ±{MAX_COORDINATE:.0f}")
        if not (0 < float(self.radius) <= MAX_RADIUS):
            raise InvalidRequestError(f"brush radius must be in (0, {MAX_RADIUS}]")
        label = check_label(self.label)
        if self.plane not in PLANES:
            raise InvalidRequestError(f"plane must be one of {PLANES}, got {self.plane!r}")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "label", label)

    def to_json(self) -> dict:
        return {
            "points": [list(p) for p in self.points],
            "radius": self.radius,
            "label": self.label,
            "plane": self.plane,
        }

    @classmethod
    def from_json(cls, data: dict) -> Stroke:
        try:
            return cls(
                points=tuple(tuple(p) for p in data["points"]),
                radius=data["radius"],
                label=data["label"],
                plane=data.get("plane", "xy"),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, InvalidRequestError):
                raise
            raise InvalidRequestError(f"malformed stroke: {exc}") from None

    def bounding_box(self, shape: Sequence[int]) -> Box:
        """Voxels the stroke can touch, clipped to ``shape`` (z, y, x)."""
        pts = np.asarray(self.points)
        r = self.radius
        lo = np.floor(pts.min(axis=0) - r).astype(int)
        hi = np.ceil(pts.max(axis=0) + r).astype(int) + 1
        if self.plane != "3d":
            axis = _NORMAL_AXIS[self.plane]
            lo[axis] = int(np.floor(pts[0, axis]))
            hi[axis] = lo[axis] + 1
        return Box(tuple(lo), tuple(hi)).clip(shape)


def check_label(label) -> int:
    """``label`` as an int if it is a whole number 0..255, else InvalidRequestError."""
    if isinstance(label, bool) or not isinstance(label, int | float | np.integer):
        raise InvalidRequestError("label must be an integer 0..255")
    if not (0 <= label <= 255) or int(label) != label:
        raise InvalidRequestError("label must be an integer: 0 (eraser) or a class value "
                                  "1..255")
    return int(label)


def stroke_cost(stroke: Stroke, shape: Sequence[int]) -> int:
    """Voxels :func:`rasterize` tests for ``stroke`` inside a volume of ``shape``.

    The sum over segments of each segment's bounding box clipped to the volume (and to
    the stroke's plane for flat strokes): what painting it costs, whatever the point count.
    """
    pts = np.asarray(stroke.points, dtype=np.float64)
    r = stroke.radius
    a, b = (pts[:-1], pts[1:]) if len(pts) > 1 else (pts, pts)
    lo = np.floor(np.minimum(a, b) - r)
    hi = np.ceil(np.maximum(a, b) + r) + 1
    upper = np.asarray(shape, dtype=np.float64)
    extent = np.clip(np.minimum(hi, upper) - np.maximum(lo, 0), 0, None)
    if stroke.plane != "3d":
        axis = _NORMAL_AXIS[stroke.plane]
        inside = 0 <= np.floor(pts[0, axis]) < upper[axis]
        extent[:, axis] = 1.0 if inside else 0.0
    return int(np.prod(extent, axis=1).sum())


def rasterize(stroke: Stroke, box: Box) -> np.ndarray:
    """Boolean mask, shaped like ``box``, of the voxels within the brush radius.

    A voxel is painted when its centre lies within ``radius`` of the polyline (measured
    in the stroke's plane for flat strokes).
    """
    mask = np.zeros(box.shape, dtype=bool)
    if box.is_empty:
        return mask
    pts = np.asarray(stroke.points, dtype=np.float64)
    axes = [0, 1, 2]
    if stroke.plane != "3d":
        normal = _NORMAL_AXIS[stroke.plane]
        plane_index = int(np.floor(pts[0, normal]))
        if not (box.start[normal] <= plane_index < box.stop[normal]):
            return mask
        axes.remove(normal)
    p = pts[:, axes]
    lo_box = np.array([box.start[a] for a in axes])
    hi_box = np.array([box.stop[a] for a in axes])
    flat = np.zeros(tuple(hi_box - lo_box), dtype=bool)
    r = stroke.radius
    segments = list(zip(p[:-1], p[1:], strict=True)) if len(p) > 1 else [(p[0], p[0])]
    for a, b in segments:
        # Only voxels in this segment's own bounding box can be reached by it.
        lo = np.maximum(np.floor(np.minimum(a, b) - r).astype(int), lo_box)
        hi = np.minimum(np.ceil(np.maximum(a, b) + r).astype(int) + 1, hi_box)
        if np.any(hi <= lo):
            continue
        centres = [np.arange(l0, h0) + 0.5 for l0, h0 in zip(lo, hi, strict=True)]
        grids = np.meshgrid(*centres, indexing="ij")
        coords = np.stack([g.ravel() for g in grids], axis=1)
        ab = b - a
        denom = float(ab @ ab)
        t = np.zeros(len(coords)) if denom == 0.0 else np.clip(((coords - a) @ ab) / denom, 0, 1)
        nearest = a + t[:, None] * ab
        hit = (((coords - nearest) ** 2).sum(axis=1) <= r * r).reshape(grids[0].shape)
        window = tuple(slice(l0 - b0, h0 - b0) for l0, h0, b0 in zip(lo, hi, lo_box, strict=True))
        flat[window] |= hit
    if stroke.plane == "3d":
        return flat
    index: list[slice | int] = [slice(None)] * 3
    index[normal] = plane_index - box.start[normal]
    mask[tuple(index)] = flat
    return mask
