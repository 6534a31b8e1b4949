"""An in-memory numpy array as a lazy volume (tests, notebooks, small results)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ilastik_web.abc import Box, FixedVolume, VolumeMetadata
from ilastik_web.errors import InvalidRequestError

_ids = itertools.count()


class ArrayVolume(FixedVolume):
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
        shape = data.shape[1:]
        super().__init__(VolumeMetadata(
            shape=shape,
            num_channels=data.shape[0],
            dtype=data.dtype,
            voxel_size=voxel_size,
            chunk_shape=chunk_shape or tuple(min(64, s) for s in shape),
            key=key or f"array-{next(_ids)}",
        ))

    def _read(self, box: Box) -> np.ndarray:
        return self._data[(slice(None), *box.slices)]
