"""The labels of one revision as a lazy volume."""

from __future__ import annotations

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.labels.store import LabelSnapshot


class LabelVolume(LazyVolume):
    """uint8 labels (one channel, 0 = unlabelled) of a frozen revision.

    Parameters
    ----------
    snapshot
        The revision to show.
    voxel_size
        Of the labelled source's level 0, (z, y, x) nm.
    key_prefix
        Makes the cache key unique per project.
    """

    def __init__(self, snapshot: LabelSnapshot, voxel_size: tuple[float, float, float],
                 key_prefix: str = "labels"):
        self.snapshot = snapshot
        self._voxel_size = voxel_size
        self._key = f"{key_prefix}/r{snapshot.revision}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.snapshot.shape

    @property
    def num_channels(self) -> int:
        return 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self._voxel_size

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        return self.snapshot.block_shape

    @property
    def key(self) -> str:
        return self._key

    def _read(self, box: Box) -> np.ndarray:
        return self.snapshot.read(box)[None]
