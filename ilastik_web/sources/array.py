"""An in-memory numpy array as a lazy volume (tests, notebooks, small results)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.errors import InvalidRequestError

_ids = itertools.count()


class ArrayVolume(LazyVolume):
    """Wrap a (c, z, y, x) array.

    Parameters
    ----------
    data
        Array shaped (c, z, y, x); use ``data[None]`` for a single channel.
    voxel_size
        Nanometres (z, y, x).
    chunk_shape
        Reported preferred block shape; defaults to 64³ clipped to the shape.
    """

    def __init__(
        self,
        data: np.ndarray,
        voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
        chunk_shape: Sequence[int] | None = None,
        key: str | None = None,
    ):
        if data.ndim != 4:
            raise InvalidRequestError(f"ArrayVolume needs a (c, z, y, x) array, got {data.shape}")
        self._data = data
        self._voxel_size = (float(voxel_size[0]), float(voxel_size[1]), float(voxel_size[2]))
        shape = data.shape[1:]
        cs = chunk_shape or tuple(min(64, s) for s in shape)
        self._chunk_shape = (int(cs[0]), int(cs[1]), int(cs[2]))
        self._key = key or f"array-{next(_ids)}"

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self._data.shape[1:]
        return (z, y, x)

    @property
    def num_channels(self) -> int:
        return self._data.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self._voxel_size

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        return self._chunk_shape

    @property
    def key(self) -> str:
        return self._key

    def _read(self, box: Box) -> np.ndarray:
        return self._data[(slice(None), *box.slices)]
