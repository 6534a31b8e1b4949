"""Lazy prediction volumes: probabilities, simple segmentation and uncertainty.

All three read the same cached uint8 probabilities, so the viewer showing them together
runs the forest once per box.
"""

from __future__ import annotations

import numpy as np

from ilastik_web.abc import Box, FixedVolume, LazyVolume, MultiscaleVolume, VolumeMetadata
from ilastik_web.cache import ArrayCache
from ilastik_web.classify.blockwise import encode_probabilities, predict_block
from ilastik_web.classify.features import FeatureComputer
from ilastik_web.classify.forest import PixelClassifier
from ilastik_web.errors import InvalidRequestError


class _LevelVolume(FixedVolume):
    """Common metadata: the geometry of one source level, uint8 voxels."""

    def __init__(self, base: LazyVolume, key: str, channels: int):
        self._base = base
        super().__init__(VolumeMetadata(
            shape=base.shape,
            num_channels=channels,
            dtype=np.uint8,
            voxel_size=base.voxel_size,
            chunk_shape=base.chunk_shape,
            key=key,
        ))


class ProbabilityVolume(_LevelVolume):
    """uint8 class probabilities (0..255) of one classifier at one pyramid level."""

    def __init__(self, classifier: PixelClassifier, computer: FeatureComputer, level: int,
                 generation: int, cache: ArrayCache, threads: int | None = None):
        base = computer.source.levels[level]
        super().__init__(base, f"probabilities/g{generation}/{base.key}", classifier.num_classes)
        self.classifier = classifier
        self.computer = computer
        self.level = level
        self.cache = cache
        self.threads = threads

    def _read(self, box: Box) -> np.ndarray:
        return self.cache.get_or_compute((self.key, box), lambda: self._predict(box))

    def _predict(self, box: Box) -> np.ndarray:
        return predict_block(self.classifier, self.computer, box, output="probabilities",
                             level=self.level, threads=self.threads)


class SegmentationVolume(_LevelVolume):
    """Simple segmentation: the most probable class value (uint8, one channel)."""

    def __init__(self, probabilities: ProbabilityVolume):
        super().__init__(probabilities._base, probabilities.key.replace("probabilities", "seg"), 1)
        self.probabilities = probabilities

    def _read(self, box: Box) -> np.ndarray:
        return encode_probabilities(self.probabilities.read(box), output="segmentation",
                                    label_values=self.probabilities.classifier.label_values)


class UncertaintyVolume(_LevelVolume):
    """1 − (p1 − p2) scaled to uint8 0..255, one channel."""

    def __init__(self, probabilities: ProbabilityVolume):
        super().__init__(
            probabilities._base, probabilities.key.replace("probabilities", "uncertainty"), 1
        )
        self.probabilities = probabilities

    def _read(self, box: Box) -> np.ndarray:
        return encode_probabilities(self.probabilities.read(box), output="uncertainty",
                                    label_values=self.probabilities.classifier.label_values)


def prediction_pyramids(
    classifier: PixelClassifier, computer: FeatureComputer, generation: int, cache: ArrayCache,
    *, threads: int | None = None,
) -> dict[str, MultiscaleVolume]:
    """The three served pyramids of one classifier generation, keyed by output name;
    each box is predicted on ``threads`` threads (default: the forest's ``n_jobs``)."""
    probabilities = [
        ProbabilityVolume(classifier, computer, level, generation, cache, threads)
        for level in range(len(computer.source))
    ]
    return {
        "probabilities": MultiscaleVolume("probabilities", probabilities),
        "segmentation": MultiscaleVolume(
            "segmentation", [SegmentationVolume(p) for p in probabilities]
        ),
        "uncertainty": MultiscaleVolume(
            "uncertainty", [UncertaintyVolume(p) for p in probabilities]
        ),
    }


def probabilities_at(volume: ProbabilityVolume, point, around=()) -> np.ndarray:
    """uint8 class probabilities (classes,) at voxel ``point`` (z, y, x), as the viewer
    shows them (255 = certain).

    Read from the first box of ``around`` (e.g. the viewer's chunks that hold the point)
    whose probabilities are already cached, so a readout under the mouse costs nothing;
    otherwise computed for that voxel alone.

    Raises
    ------
    InvalidRequestError
        The point is outside the volume.
    """
    z, y, x = (int(v) for v in point)
    voxel = Box((z, y, x), (z + 1, y + 1, x + 1))
    if not Box.from_shape(volume.shape).contains(voxel):
        raise InvalidRequestError(f"voxel (x, y, z) {(x, y, z)} is outside the volume "
                                  f"(x, y, z) {tuple(volume.shape[::-1])}")
    for box in around:
        if not box.contains(voxel):
            continue
        cached = volume.cache.get((volume.key, box))
        if cached is not None:
            return cached[(slice(None), *voxel.relative_to(box))].reshape(-1).copy()
    return volume.read(voxel).reshape(-1)
