"""A simulated annotator: scribbles like a person would, from a ground-truth volume.

Used by tests and benchmarks to run reproducible sessions, and to measure accuracy on
voxels far from any stroke.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ilastik_web.labels import Stroke


def scribbles(
    truth: np.ndarray,
    *,
    slices: Sequence[int],
    strokes_per_class: int = 3,
    radius: float = 1.5,
    length: int = 4,
    step: float = 4.0,
    rng: np.random.Generator | int = 0,
) -> list[Stroke]:
    """Short xy strokes inside each class's interior on the given z ``slices``.

    Parameters
    ----------
    truth
        Ground-truth class values (z, y, x); 0 is ignored.
    slices
        z indices to paint on.
    strokes_per_class
        Strokes per class per slice (fewer where a class has too little interior).
    radius
        Brush radius in voxels.
    length, step
        Polyline vertices per stroke and the distance between them, in voxels.
    rng
        Seed or generator.

    Returns
    -------
    list of Stroke
        Each stroke stays at least ``radius`` voxels inside its class.
    """
    rng = np.random.default_rng(rng)
    strokes = []
    for z in slices:
        plane = truth[z]
        for value in np.unique(plane):
            if value == 0:
                continue
            interior = ndimage.distance_transform_edt(plane == value) > radius + 1
            candidates = np.argwhere(interior)
            if len(candidates) == 0:
                continue
            for _ in range(strokes_per_class):
                y, x = candidates[rng.integers(len(candidates))]
                points = [(z + 0.5, y + 0.5, x + 0.5)]
                for _ in range(length - 1):
                    angle = rng.uniform(0, 2 * np.pi)
                    ny = int(round(y + step * np.sin(angle)))
                    nx = int(round(x + step * np.cos(angle)))
                    inside = 0 <= ny < plane.shape[0] and 0 <= nx < plane.shape[1]
                    if not inside or not interior[ny, nx]:
                        continue
                    y, x = ny, nx
                    points.append((z + 0.5, y + 0.5, x + 0.5))
                strokes.append(Stroke(tuple(points), radius=radius, label=int(value)))
    return strokes


def far_from_labels(labelled: np.ndarray, distance: float,
                    voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Mask of voxels at least ``distance`` (in units of ``voxel_size``) from any label."""
    if not labelled.any():
        return np.ones(labelled.shape, dtype=bool)
    return ndimage.distance_transform_edt(~labelled, sampling=voxel_size) >= distance
