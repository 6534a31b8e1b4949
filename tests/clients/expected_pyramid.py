"""The pyramid a client should see, computed here with plain numpy.

Written from the rule ``ilastik_web.pyramid`` documents, without its code: level ``k + 1``
halves every axis of level ``k`` except an axis of size 1 and an axis whose voxel size is
already at least twice the finest voxel size among the axes longer than 1; a coarse voxel
is the mean of the fine voxels that exist (edge blocks are partial), integers rounded to
the nearest integer (numpy's ``rint``: ties to even) and clipped to the dtype, floats
computed in float64 and stored in the source dtype. Native levels come first, as written;
computed levels continue from the coarsest native one until every axis is at most
``coarsest_size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Voxel = tuple[float, float, float]


def halving_factors(shape_zyx: Sequence[int], voxel_zyx: Sequence[float]) -> tuple[int, ...]:
    """Per-axis factor (1 or 2) from a level to the next coarser one."""
    finest = min((v for s, v in zip(shape_zyx, voxel_zyx, strict=True) if s > 1), default=None)
    if finest is None:
        return (1, 1, 1)
    return tuple(
        2 if s > 1 and v < 2 * finest else 1 for s, v in zip(shape_zyx, voxel_zyx, strict=True)
    )


def mean_downsample(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over ``factors`` blocks of a (c, z, y, x) array, partial blocks at the far edges."""
    padding = [(0, 0)] + [(0, -s % f) for s, f in zip(data.shape[1:], factors, strict=True)]
    sums = np.pad(data.astype(np.float64), padding)
    counts = np.pad(np.ones(data.shape[1:], np.float64), padding[1:])
    for axis, f in enumerate(factors, start=1):
        if f == 1:
            continue
        new_shape = list(sums.shape)
        new_shape[axis : axis + 1] = [sums.shape[axis] // f, f]
        sums = sums.reshape(new_shape).sum(axis=axis + 1)
        count_shape = list(counts.shape)
        count_shape[axis - 1 : axis] = [counts.shape[axis - 1] // f, f]
        counts = counts.reshape(count_shape).sum(axis=axis)
    means = sums / counts[None]
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return np.clip(np.rint(means), info.min, info.max).astype(data.dtype)
    return means.astype(data.dtype)


def expected_levels(
    native: Sequence[np.ndarray], native_voxels: Sequence[Voxel], coarsest_size: int
) -> list[tuple[np.ndarray, Voxel]]:
    """Every served level, (c, z, y, x) with its voxel size, finest first."""
    levels = [(np.asarray(a), tuple(float(v) for v in vox))
              for a, vox in zip(native, native_voxels, strict=True)]
    while max(levels[-1][0].shape[1:]) > coarsest_size:
        data, voxel = levels[-1]
        factors = halving_factors(data.shape[1:], voxel)
        if factors == (1, 1, 1):
            break
        levels.append((mean_downsample(data, factors),
                       tuple(v * f for v, f in zip(voxel, factors, strict=True))))
    return levels  # type: ignore[return-value]
