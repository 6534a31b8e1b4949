"""Pyramids for sources that have none: each level computed block by block from the
next finer level, cached, never from full resolution.

Level ``k + 1`` halves every axis of level ``k`` except an axis of size 1 and an axis
whose voxel size is already at least twice the finest voxel size (anisotropic data is
first made roughly isotropic, as Neuroglancer's downsampling does). One block of level
``k + 1`` reads the (at most 2×2×2) matching blocks of level ``k``, which are themselves
cached, so a coarse read touches only coarse-enough data.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ilastik_web.abc import Box, LazyVolume, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.cancel import check_cancelled
from ilastik_web.errors import InvalidRequestError

Method = Literal["mean", "mode"]

_BLOCK_3D = (64, 64, 64)
_BLOCK_2D = (1, 256, 256)


def next_factors(shape: Sequence[int], voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """Per-axis factors (1 or 2) from a level to the next coarser one."""
    active = [s > 1 for s in shape]
    if not any(active):
        return (1, 1, 1)
    finest = min(v for v, a in zip(voxel_size, active, strict=True) if a)
    return tuple(  # type: ignore[return-value]
        2 if a and v < 2 * finest else 1 for v, a in zip(voxel_size, active, strict=True)
    )


def pyramid_factors(
    shape: Sequence[int], voxel_size: Sequence[float], min_size: int = 64
) -> list[tuple[int, int, int]]:
    """Step factors of each level after the first, until every axis is <= ``min_size``."""
    steps: list[tuple[int, int, int]] = []
    shape = tuple(int(s) for s in shape)
    voxel = tuple(float(v) for v in voxel_size)
    while any(s > min_size for s in shape):
        factors = next_factors(shape, voxel)
        steps.append(factors)
        shape = tuple(-(-s // f) for s, f in zip(shape, factors, strict=True))
        voxel = tuple(v * f for v, f in zip(voxel, factors, strict=True))
    return steps


def _pad_to_multiple(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    pad = [(0, 0)] + [(0, (-s) % f) for s, f in zip(data.shape[1:], factors, strict=True)]
    return np.pad(data, pad) if any(p[1] for p in pad) else data


def _blocked(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """(c, Z, Y, X) padded data → (c, Z/fz, Y/fy, X/fx, fz*fy*fx)."""
    c, z, y, x = data.shape
    fz, fy, fx = factors
    view = data.reshape(c, z // fz, fz, y // fy, fy, x // fx, fx)
    return view.transpose(0, 1, 3, 5, 2, 4, 6).reshape(c, z // fz, y // fy, x // fx, fz * fy * fx)


def _valid_mask(shape: Sequence[int], factors: Sequence[int]) -> np.ndarray:
    """Which voxels of each (padded) block exist, shaped like :func:`_blocked` output."""
    axes = [np.arange(-(-s // f) * f) < s for s, f in zip(shape, factors, strict=True)]
    mask = axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]
    return _blocked(mask[None], factors)[0]


def downsample_mean(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Block means of a (c, z, y, x) array; edge blocks average only the voxels that exist.

    Integer data is rounded to the nearest integer; float data keeps its dtype.
    """
    factors = tuple(int(f) for f in factors)
    counts = np.ones((1, 1, 1), np.float64)
    for axis, (s, f) in enumerate(zip(data.shape[1:], factors, strict=True)):
        n = -(-s // f)
        per_block = np.full(n, float(f))
        per_block[-1] = s - (n - 1) * f
        shape = [1, 1, 1]
        shape[axis] = n
        counts = counts * per_block.reshape(shape)
    padded = _pad_to_multiple(data, factors)
    sums = _blocked(padded, factors).sum(axis=-1, dtype=np.float64)
    means = sums / counts[None]
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return np.clip(np.rint(means), info.min, info.max).astype(data.dtype)
    return means.astype(data.dtype)


def downsample_mode(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Most frequent value per block of a (c, z, y, x) label array (ties: smallest value);
    edge blocks vote with the voxels that exist."""
    factors = tuple(int(f) for f in factors)
    valid = _valid_mask(data.shape[1:], factors)[None]
    values = _blocked(_pad_to_multiple(data, factors), factors)
    equal = values[..., :, None] == values[..., None, :]
    votes = (equal & valid[..., None, :]).sum(axis=-1)
    votes = np.where(valid, votes, -1)
    best = votes.max(axis=-1, keepdims=True)
    top = np.iinfo(data.dtype).max if data.dtype.kind in "ui" else np.inf
    candidates = np.where(votes == best, values, top)
    return candidates.min(axis=-1).astype(data.dtype)


_REDUCERS = {"mean": downsample_mean, "mode": downsample_mode}


class DownsampledVolume(LazyVolume):
    """``finer`` downsampled by integer ``factors``, computed per block and cached.

    Parameters
    ----------
    finer
        The next finer level.
    factors
        Per-axis (z, y, x) factors relative to ``finer``.
    method
        ``"mean"`` for images, ``"mode"`` for label volumes.
    cache
        Holds this level's blocks under ``(key, block start)``.
    key
        Stable identity of this level.
    block_shape
        Block (z, y, x) computed and cached at once; also the reported chunk shape.
    """

    def __init__(
        self,
        finer: LazyVolume,
        factors: Sequence[int],
        *,
        method: Method,
        cache: ArrayCache,
        key: str,
        block_shape: Sequence[int] | None = None,
    ):
        if method not in _REDUCERS:
            raise InvalidRequestError(f"unknown downsampling method {method!r}")
        self.finer = finer
        self.factors = (int(factors[0]), int(factors[1]), int(factors[2]))
        self.method = method
        self._reduce = _REDUCERS[method]
        self._cache = cache
        self._key = key
        self._shape = tuple(-(-s // f) for s, f in zip(finer.shape, self.factors, strict=True))
        default = _BLOCK_2D if self._shape[0] == 1 else _BLOCK_3D
        block = block_shape or default
        self._block = tuple(max(1, min(int(b), s)) for b, s in zip(block, self._shape, strict=True))
        self._voxel_size = tuple(
            v * f for v, f in zip(finer.voxel_size, self.factors, strict=True)
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return self.finer.num_channels

    @property
    def dtype(self) -> np.dtype:
        return self.finer.dtype

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self._voxel_size  # type: ignore[return-value]

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        return self._block  # type: ignore[return-value]

    @property
    def key(self) -> str:
        return self._key

    def _block_box(self, index: Sequence[int]) -> Box:
        start = tuple(i * b for i, b in zip(index, self._block, strict=True))
        stop = tuple(
            min(a + b, s) for a, b, s in zip(start, self._block, self._shape, strict=True)
        )
        return Box(start, stop)

    def _compute_block(self, block: Box) -> np.ndarray:
        check_cancelled()
        finer_box = block.scaled_up(self.factors).clip(self.finer.shape)
        return self._reduce(self.finer.read(finer_box), self.factors)

    def block(self, index: Sequence[int]) -> np.ndarray:
        """The cached (c, z, y, x) block at grid ``index``."""
        box = self._block_box(index)
        return self._cache.get_or_compute(
            (self._key, box.start), lambda: self._compute_block(box)
        )

    def _read(self, box: Box) -> np.ndarray:
        ranges = [
            range(a // b, -(-e // b))
            for a, e, b in zip(box.start, box.stop, self._block, strict=True)
        ]
        out = np.empty((self.num_channels, *box.shape), self.dtype)
        for index in itertools.product(*ranges):
            cell = self._block_box(index)
            part = cell.intersect(box)
            out[(slice(None), *part.relative_to(box))] = self.block(index)[
                (slice(None), *part.relative_to(cell))
            ]
        return out


def build_pyramid(
    base: LazyVolume,
    *,
    cache: ArrayCache,
    name: str,
    method: Method = "mean",
    min_size: int = 64,
) -> MultiscaleVolume:
    """A pyramid over ``base``: levels until every spatial axis is <= ``min_size``.

    Parameters
    ----------
    base
        Full-resolution level.
    cache
        Shared cache for the computed blocks of every coarser level.
    name
        Name of the returned multiscale volume.
    method
        ``"mean"`` for images, ``"mode"`` for label volumes.
    min_size
        Stop once every axis is at most this long (or 1).
    """
    if min_size < 1:
        raise InvalidRequestError(f"min_size must be >= 1, got {min_size}")
    levels: list[LazyVolume] = [base]
    total = (1, 1, 1)
    for factors in pyramid_factors(base.shape, base.voxel_size, min_size):
        total = tuple(t * f for t, f in zip(total, factors, strict=True))  # type: ignore[assignment]
        key = f"{base.key}/pyramid-{method}-{total[0]}x{total[1]}x{total[2]}"
        levels.append(
            DownsampledVolume(levels[-1], factors, method=method, cache=cache, key=key)
        )
    return MultiscaleVolume(name, levels)
