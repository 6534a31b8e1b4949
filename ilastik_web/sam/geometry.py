"""Slices of a volume as 2D images, and the mapping between them and viewer coordinates.

A slice is one index along a plane's normal axis. Its 2D image keeps the two remaining
(z, y, x) axes in that order: "xy" slices are (y, x), "xz" slices (z, x), "yz" slices
(z, y). Viewer coordinates are continuous voxel coordinates (x, y, z) of level 0 in
which voxel ``i`` covers ``[i, i + 1)`` and has its centre at ``i + 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError, OutOfBoundsError

SlicePlane = Literal["xy", "xz", "yz"]
SLICE_PLANES: tuple[SlicePlane, ...] = ("xy", "xz", "yz")
#: The (z, y, x) axis each plane is perpendicular to.
NORMAL_AXIS = {"xy": 0, "xz": 1, "yz": 2}


def check_plane(plane: str) -> SlicePlane:
    if plane not in SLICE_PLANES:
        raise InvalidRequestError(f"plane must be one of {SLICE_PLANES}, got {plane!r}")
    return plane  # type: ignore[return-value]


def in_plane_axes(plane: SlicePlane) -> tuple[int, int]:
    """The (row, column) axes of a slice image, as (z, y, x) axis numbers."""
    normal = NORMAL_AXIS[plane]
    rows, cols = (a for a in range(3) if a != normal)
    return rows, cols


@dataclass(frozen=True)
class SliceRef:
    """One 2D slice of a volume of ``shape`` (z, y, x).

    Parameters
    ----------
    shape
        Spatial shape of the volume.
    plane
        "xy", "xz" or "yz".
    index
        Position along the plane's normal axis.
    """

    shape: tuple[int, int, int]
    plane: SlicePlane
    index: int

    def __post_init__(self) -> None:
        check_plane(self.plane)
        extent = self.shape[NORMAL_AXIS[self.plane]]
        if not 0 <= int(self.index) < extent:
            raise OutOfBoundsError(
                f"slice {self.index} is outside 0..{extent - 1} along the {self.plane} normal"
            )
        object.__setattr__(self, "index", int(self.index))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def normal(self) -> int:
        return NORMAL_AXIS[self.plane]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(rows, columns) of the slice image."""
        rows, cols = in_plane_axes(self.plane)
        return self.shape[rows], self.shape[cols]

    @property
    def box(self) -> Box:
        """The slice as a (z, y, x) box one voxel thick along the normal."""
        start = [0, 0, 0]
        stop = list(self.shape)
        start[self.normal], stop[self.normal] = self.index, self.index + 1
        return Box(tuple(start), tuple(stop))

    def with_index(self, index: int) -> SliceRef:
        return SliceRef(self.shape, self.plane, index)

    def to_image(self, array_zyx: np.ndarray) -> np.ndarray:
        """Drop the normal axis of an array shaped like (..., *box.shape) of a slice box."""
        return np.take(array_zyx, 0, axis=array_zyx.ndim - 3 + self.normal)

    def box_of(self, image_box: Box) -> Box:
        """The (z, y, x) box of a (row, column) box of the slice image."""
        rows, cols = in_plane_axes(self.plane)
        start, stop = [0, 0, 0], [0, 0, 0]
        start[self.normal], stop[self.normal] = self.index, self.index + 1
        start[rows], stop[rows] = image_box.start[0], image_box.stop[0]
        start[cols], stop[cols] = image_box.start[1], image_box.stop[1]
        return Box(tuple(start), tuple(stop))

    def to_pixels(self, points_xyz: np.ndarray) -> np.ndarray:
        """Viewer points (n, 3) as continuous (column, row) image coordinates (n, 2).

        The slice image's pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``.
        """
        points_zyx = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)[:, ::-1]
        rows, cols = in_plane_axes(self.plane)
        return np.stack([points_zyx[:, cols], points_zyx[:, rows]], axis=1)

    def to_viewer(self, pixels_cr: np.ndarray, normal_offset: float = 0.5) -> np.ndarray:
        """Continuous (column, row) image coordinates (n, 2) as viewer points (n, 3) x, y, z.

        The normal coordinate is ``index + normal_offset`` (the voxel centre by default).
        """
        pixels = np.asarray(pixels_cr, dtype=np.float64).reshape(-1, 2)
        rows, cols = in_plane_axes(self.plane)
        zyx = np.empty((len(pixels), 3))
        zyx[:, self.normal] = self.index + normal_offset
        zyx[:, rows] = pixels[:, 1]
        zyx[:, cols] = pixels[:, 0]
        return zyx[:, ::-1]


def slice_index_of(points_xyz: Sequence[Sequence[float]], plane: SlicePlane) -> int:
    """The slice holding viewer points: the floor of the first point's normal coordinate."""
    if not len(points_xyz):
        raise InvalidRequestError("no point to take the slice index from")
    zyx = list(points_xyz[0])[::-1]
    return int(np.floor(zyx[NORMAL_AXIS[plane]]))


@dataclass(frozen=True)
class Tile:
    """One tile of a slice image: the region embedded, and the inner part it owns."""

    outer: Box  # (row, column) box, halo included
    inner: Box


def tiles_of(image_shape: Sequence[int], tile_size: int, halo: int) -> list[Tile]:
    """Cover an image with tiles of at most ``tile_size`` pixels a side.

    An image that fits is one tile. Otherwise inner regions of ``tile_size - 2 * halo``
    pixels tile the image and each tile adds ``halo`` pixels of context around its
    inner region (clipped at the image border), so objects near an inner border are
    still seen whole.
    """
    rows, cols = (int(s) for s in image_shape)
    whole = Box((0, 0), (rows, cols))
    if rows <= tile_size and cols <= tile_size:
        return [Tile(whole, whole)]
    step = tile_size - 2 * halo
    if halo < 0 or step < 1:
        raise InvalidRequestError(f"tile size {tile_size} leaves no room inside a halo of {halo}")
    tiles = []
    for inner in whole.chunks((step, step)):
        tiles.append(Tile(inner.grow(halo).clip((rows, cols)), inner))
    return tiles


def tile_for(tiles: Sequence[Tile], pixel_cr: Sequence[float]) -> int:
    """Index of the tile whose inner region holds the continuous (column, row) position."""
    c, r = (int(np.floor(v)) for v in pixel_cr)
    for i, tile in enumerate(tiles):
        (r0, c0), (r1, c1) = tile.inner.start, tile.inner.stop
        if r0 <= r < r1 and c0 <= c < c1:
            return i
    raise OutOfBoundsError(f"position (column {c}, row {r}) is outside the slice")
