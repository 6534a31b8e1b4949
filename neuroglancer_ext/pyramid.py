"""Complete a volume's pyramid with lazily block-averaged levels.

Neuroglancer always fetches the coarse scales, so every served volume needs a real
pyramid. Native levels are kept; the missing coarse ones are
:class:`DownsampledVolume` s, each computed from the level above it, block by block, only
where asked, and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ilastik_web.abc import Box, LazyVolume, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import InvalidRequestError

DownsampleMethod = Literal["mean", "subsample"]

#: Stop adding levels once every axis of the coarsest level is at most this long.
DEFAULT_COARSEST_SIZE = 128
#: Block shape (z, y, x) in which downsampled levels are computed and cached.
DEFAULT_BLOCK_SHAPE = (64, 64, 64)


def downsample_array(
    data: np.ndarray, factors: Sequence[int], *, method: DownsampleMethod = "mean"
) -> np.ndarray:
    """Downsample a (c, z, y, x) array by integer ``factors`` (z, y, x).

    Parameters
    ----------
    data
        Array shaped (c, z, y, x).
    factors
        Integer factors per spatial axis; the output has ``ceil(n / f)`` voxels per axis.
    method
        ``"mean"`` averages each block (partial blocks at the far edges average only the
        voxels they hold; integers are rounded); ``"subsample"`` keeps the first voxel of
        each block, which keeps label ids valid.

    Returns
    -------
    numpy.ndarray
        C-ordered (c, z', y', x') array of ``data.dtype``.
    """
    fz, fy, fx = (int(f) for f in factors)
    if min(fz, fy, fx) < 1:
        raise InvalidRequestError(f"downsampling factors must be >= 1, got {tuple(factors)}")
    if method == "subsample":
        return np.ascontiguousarray(data[:, ::fz, ::fy, ::fx])
    if method != "mean":
        raise InvalidRequestError(f"unknown downsampling method {method!r}")
    c, z, y, x = data.shape
    oz, oy, ox = -(-z // fz), -(-y // fy), -(-x // fx)
    acc_dtype = np.float64 if data.dtype.itemsize > 2 else np.float32
    padded = np.zeros((c, oz * fz, oy * fy, ox * fx), dtype=acc_dtype)
    padded[:, :z, :y, :x] = data
    sums = padded.reshape(c, oz, fz, oy, fy, ox, fx).sum(axis=(2, 4, 6))
    counts = (
        _block_counts(z, fz)[:, None, None]
        * _block_counts(y, fy)[None, :, None]
        * _block_counts(x, fx)[None, None, :]
    )
    mean = sums / counts
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    elif data.dtype == np.bool_:
        mean = mean >= 0.5
    return np.ascontiguousarray(mean.astype(data.dtype))


def _block_counts(length: int, factor: int) -> np.ndarray:
    """Voxels per output block along one axis (the last block may be short)."""
    n = -(-length // factor)
    counts = np.full(n, factor, dtype=np.float64)
    counts[-1] = length - (n - 1) * factor
    return counts


class DownsampledVolume(LazyVolume):
    """``parent`` downsampled by integer factors, computed per block on demand.

    Parameters
    ----------
    parent
        The finer level this one is computed from.
    factors
        Integer factors (z, y, x) relative to ``parent``.
    method
        See :func:`downsample_array`.
    cache
        Where computed blocks are kept; without one every read recomputes.
    block_shape
        Shape (z, y, x) of the cached blocks, clipped to the volume.
    """

    def __init__(
        self,
        parent: LazyVolume,
        factors: Sequence[int],
        *,
        method: DownsampleMethod = "mean",
        cache: ArrayCache | None = None,
        block_shape: Sequence[int] = DEFAULT_BLOCK_SHAPE,
    ):
        self.parent = parent
        self.factors = (int(factors[0]), int(factors[1]), int(factors[2]))
        if min(self.factors) < 1:
            raise InvalidRequestError(f"downsampling factors must be >= 1, got {self.factors}")
        self.method: DownsampleMethod = method
        self.cache = cache
        self._shape = tuple(-(-s // f) for s, f in zip(parent.shape, self.factors, strict=True))
        self._block_shape = tuple(
            max(1, min(int(b), s)) for b, s in zip(block_shape, self._shape, strict=True)
        )
        fz, fy, fx = self.factors
        self._key = f"{parent.key}/down{fz}x{fy}x{fx}-{method}"

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self._shape
        return (z, y, x)

    @property
    def num_channels(self) -> int:
        return self.parent.num_channels

    @property
    def dtype(self) -> np.dtype:
        return self.parent.dtype

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        vz, vy, vx = (v * f for v, f in zip(self.parent.voxel_size, self.factors, strict=True))
        return (vz, vy, vx)

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        z, y, x = self._block_shape
        return (z, y, x)

    @property
    def key(self) -> str:
        return self._key

    def _compute_block(self, block: Box) -> np.ndarray:
        source_box = block.scaled_up(self.factors).clip(self.parent.shape)
        return downsample_array(self.parent.read(source_box), self.factors, method=self.method)

    def _block(self, block: Box) -> np.ndarray:
        if self.cache is None:
            return self._compute_block(block)
        return self.cache.get_or_compute(
            (self._key, block.start), lambda: self._compute_block(block)
        )

    def _read(self, box: Box) -> np.ndarray:
        out = np.empty((self.num_channels, *box.shape), dtype=self.dtype)
        grid = self._block_shape
        for piece in box.chunks(grid):
            block_start = tuple(a // g * g for a, g in zip(piece.start, grid, strict=True))
            block = Box(
                block_start, tuple(a + g for a, g in zip(block_start, grid, strict=True))
            ).clip(self.shape)
            data = self._block(block)
            out[(slice(None), *piece.relative_to(box))] = data[
                (slice(None), *piece.relative_to(block))
            ]
        return out


def next_level_factors(
    shape: Sequence[int], voxel_size: Sequence[float]
) -> tuple[int, int, int] | None:
    """Factors (z, y, x) of 1 or 2 for the next coarser level, or None if none is useful.

    Axes of length 1 stay; an axis is halved when its voxel size is within 1.5× of the
    finest voxel size among the axes still longer than 1, so anisotropic volumes first
    become roughly isotropic.
    """
    candidates = [i for i in range(3) if shape[i] > 1]
    if not candidates:
        return None
    finest = min(voxel_size[i] for i in candidates)
    factors = [1, 1, 1]
    for i in candidates:
        if voxel_size[i] <= 1.5 * finest:
            factors[i] = 2
    return (factors[0], factors[1], factors[2])


def complete_pyramid(
    volume: MultiscaleVolume,
    *,
    method: DownsampleMethod = "mean",
    cache: ArrayCache | None = None,
    coarsest_size: int = DEFAULT_COARSEST_SIZE,
    max_levels: int = 16,
) -> MultiscaleVolume:
    """Return ``volume`` with lazy levels appended until the coarsest is small.

    Parameters
    ----------
    volume
        Native levels, finest first; they are kept as they are.
    method
        ``"mean"`` for intensities, ``"subsample"`` for labels (see :func:`downsample_array`).
    cache
        Cache for the computed blocks of the added levels.
    coarsest_size
        Add levels while some axis of the coarsest level is longer than this.
    max_levels
        Upper bound on the total number of levels.

    Returns
    -------
    MultiscaleVolume
        ``volume`` itself when nothing needs adding, else a new pyramid sharing its levels.
    """
    levels: list[LazyVolume] = list(volume.levels)
    while len(levels) < max_levels:
        top = levels[-1]
        if max(top.shape) <= coarsest_size:
            break
        factors = next_level_factors(top.shape, top.voxel_size)
        if factors is None:
            break
        levels.append(DownsampledVolume(top, factors, method=method, cache=cache))
    if len(levels) == len(volume.levels):
        return volume
    return MultiscaleVolume(volume.name, levels)


def is_native(level: LazyVolume) -> bool:
    """True for a level read from the source, False for one this module computes."""
    return not isinstance(level, DownsampledVolume)

