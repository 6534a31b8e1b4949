"""The labels of one revision as a lazy volume."""

from __future__ import annotations

import numpy as np

from ilastik_web.abc import Box, FixedVolume, VolumeMetadata
from ilastik_web.labels.store import LabelSnapshot


class LabelVolume(FixedVolume):
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
        super().__init__(VolumeMetadata(
            shape=snapshot.shape,
            num_channels=1,
            dtype=np.uint8,
            voxel_size=voxel_size,
            chunk_shape=snapshot.block_shape,
            key=f"{key_prefix}/r{snapshot.revision}",
        ))

    def _read(self, box: Box) -> np.ndarray:
        return self.snapshot.read(box)[None]
