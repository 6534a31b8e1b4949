"""Labels drawn as outlines: only the labelled voxels on the border of their region.

The viewer fetches a cross-section panel's data in chunks one voxel thin across the panel
(xy chunks for the xy panel, xz for xz, yz for yz), so a chunk one voxel thin along an
axis is outlined in its own plane: each panel shows the outline of what it cuts. Other
boxes are outlined slice by slice in xy.
"""

from __future__ import annotations

import numpy as np

from ilastik_web.abc import Box, FixedVolume, LazyVolume, MultiscaleVolume, VolumeMetadata


def outline_2d(labels: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """Keep the voxels of ``labels`` (z, y, x) with a 4-neighbour of another value in the
    plane of ``axes``; zero the rest. The array's border counts as the same value
    (no outline along the edge of the data)."""
    padded = np.pad(labels, [(1, 1) if a in axes else (0, 0) for a in range(labels.ndim)],
                    mode="edge")
    inner = tuple(slice(1, -1) if a in axes else slice(None) for a in range(labels.ndim))
    border = np.zeros(labels.shape, bool)
    for axis in axes:
        for step in (-1, 1):
            shifted = list(inner)
            shifted[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            border |= padded[tuple(shifted)] != labels
    return np.where(border, labels, 0).astype(labels.dtype, copy=False)


def plane_of(box: Box) -> tuple[int, int]:
    """The plane a box is outlined in: the two axes other than a one-voxel-thin one (z
    first), else y and x."""
    for axis in range(3):
        if box.shape[axis] == 1:
            return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]
    return (1, 2)


class OutlineVolume(FixedVolume):
    """The outlines of a label volume's regions (same shape, dtype and values)."""

    def __init__(self, labels: LazyVolume):
        self.labels = labels
        super().__init__(VolumeMetadata(
            shape=labels.shape, num_channels=1, dtype=labels.dtype,
            voxel_size=labels.voxel_size, chunk_shape=labels.chunk_shape,
            key=f"{labels.key}/outline",
        ))

    def _read(self, box: Box) -> np.ndarray:
        axes = plane_of(box)
        grown = box.grow([1 if a in axes else 0 for a in range(3)]).clip(self.shape)
        outlined = outline_2d(self.labels.read(grown)[0], axes)
        return outlined[box.relative_to(grown)][None]


def outline_pyramid(labels: MultiscaleVolume) -> MultiscaleVolume:
    """Every level of ``labels`` as outlines."""
    return MultiscaleVolume(f"{labels.name} outline",
                            [OutlineVolume(level) for level in labels.levels])
