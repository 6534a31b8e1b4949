"""The lazy-volume contract: everything the viewer shows is one of these.

Conventions used throughout the package:

- spatial axes are ordered (z, y, x); a 2D image has ``z == 1``;
- :meth:`LazyVolume.read` returns a C-ordered array shaped (channels, z, y, x);
- voxel sizes are in nanometres, ordered (z, y, x).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ilastik_web.abc.box import Box
from ilastik_web.errors import InvalidRequestError, OutOfBoundsError


class LazyVolume(ABC):
    """A (channels, z, y, x) array computed or read only for the box asked.

    Subclasses implement :meth:`_read` and the metadata properties; :meth:`read` checks
    the request and the result so every backend behaves the same at the edges.
    Implementations must be safe to call from several threads at once.
    """

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (z, y, x)."""

    @property
    @abstractmethod
    def num_channels(self) -> int: ...

    @property
    @abstractmethod
    def dtype(self) -> np.dtype: ...

    @property
    @abstractmethod
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in nanometres, (z, y, x)."""

    @property
    @abstractmethod
    def chunk_shape(self) -> tuple[int, int, int]:
        """The block shape (z, y, x) this volume reads most cheaply, grid anchored at 0."""

    @property
    @abstractmethod
    def key(self) -> str:
        """A stable identity, unique among live volumes, used as a cache key prefix."""

    @abstractmethod
    def _read(self, box: Box) -> np.ndarray:
        """Return the voxels of ``box`` (already validated to lie inside the volume)."""

    @property
    def bounds(self) -> Box:
        return Box.from_shape(self.shape)

    def read(self, box: Box) -> np.ndarray:
        """Read ``box`` as a C-ordered (channels, *box.shape) array of :attr:`dtype`.

        Raises
        ------
        OutOfBoundsError
            If the box is not inside the volume.
        """
        if box.ndim != 3:
            raise InvalidRequestError(f"expected a 3D (z, y, x) box, got {box}")
        if not self.bounds.contains(box):
            raise OutOfBoundsError(f"box {box} is outside the volume of shape {self.shape}")
        out = self._read(box)
        expected = (self.num_channels, *box.shape)
        if out.shape != expected:
            raise AssertionError(
                f"{type(self).__name__}._read returned shape {out.shape}, expected {expected}"
            )
        return np.ascontiguousarray(out, dtype=self.dtype)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.key!r} shape={self.shape} c={self.num_channels} "
            f"dtype={self.dtype} voxel_size={self.voxel_size}>"
        )


@dataclass(frozen=True)
class VolumeMetadata:
    """What a lazy volume is, apart from its voxels (see :class:`LazyVolume`)."""

    shape: tuple[int, int, int]
    num_channels: int
    dtype: np.dtype
    voxel_size: tuple[float, float, float]
    chunk_shape: tuple[int, int, int]
    key: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        object.__setattr__(self, "num_channels", int(self.num_channels))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))
        object.__setattr__(self, "chunk_shape", tuple(int(v) for v in self.chunk_shape))


class FixedVolume(LazyVolume):
    """A lazy volume whose metadata is fixed when it is made; subclasses add ``_read``."""

    def __init__(self, metadata: VolumeMetadata):
        self.metadata = metadata

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.metadata.shape

    @property
    def num_channels(self) -> int:
        return self.metadata.num_channels

    @property
    def dtype(self) -> np.dtype:
        return self.metadata.dtype

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self.metadata.voxel_size

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        return self.metadata.chunk_shape

    @property
    def key(self) -> str:
        return self.metadata.key


class MultiscaleVolume:
    """A pyramid of lazy volumes, finest first, each an integer downsampling of level 0.

    Parameters
    ----------
    name
        Human-readable name.
    levels
        Level 0 is full resolution. Every level has the same channels and dtype, and a
        voxel size that is an integer multiple (per axis) of level 0's.
    """

    def __init__(self, name: str, levels: Sequence[LazyVolume]):
        if not levels:
            raise InvalidRequestError("a multiscale volume needs at least one level")
        base = levels[0]
        for level in levels[1:]:
            if level.num_channels != base.num_channels or level.dtype != base.dtype:
                raise InvalidRequestError(f"pyramid level {level!r} differs from {base!r}")
        self.name = name
        self.levels: tuple[LazyVolume, ...] = tuple(levels)
        self._factors = tuple(self._factor_of(level) for level in self.levels)

    def _factor_of(self, level: LazyVolume) -> tuple[int, int, int]:
        base = self.levels[0].voxel_size
        factors = []
        for b, v in zip(base, level.voxel_size, strict=True):
            f = round(v / b)
            if f < 1 or abs(f * b - v) > 1e-3 * v:
                raise InvalidRequestError(
                    f"pyramid voxel size {level.voxel_size} is not an integer multiple of {base}"
                )
            factors.append(f)
        return (factors[0], factors[1], factors[2])

    @property
    def base(self) -> LazyVolume:
        return self.levels[0]

    def factors(self, level: int) -> tuple[int, int, int]:
        """Downsampling factors (z, y, x) of ``level`` relative to level 0."""
        return self._factors[level]

    def __len__(self) -> int:
        return len(self.levels)

    def __repr__(self) -> str:
        return f"<MultiscaleVolume {self.name!r} levels={len(self.levels)} base={self.base!r}>"
