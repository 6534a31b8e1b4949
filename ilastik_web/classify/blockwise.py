"""The one per-block prediction function the viewer and batch jobs share.

:func:`predict_block` reads a box plus the feature halo, computes the features, runs the
forest and encodes the result exactly as the viewer shows it. The served prediction
volumes (:mod:`ilastik_web.classify.prediction`) and every batch worker (:mod:`hpc`)
call it, so a batch export equals, voxel for voxel, what the viewer shows for the same
classifier generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.cancel import check_cancelled
from ilastik_web.classify.features import FeatureComputer
from ilastik_web.classify.forest import (
    PixelClassifier,
    probabilities_to_uint8,
    segmentation_from_probabilities,
    uncertainty_from_probabilities,
)
from ilastik_web.errors import InvalidRequestError

#: What a block can be exported as.
OUTPUTS = ("probabilities", "segmentation", "uncertainty", "features")


def output_channels(output: str, classifier: PixelClassifier) -> int:
    """Channels of ``output`` for ``classifier``."""
    check_output(output)
    if output == "probabilities":
        return classifier.num_classes
    if output == "features":
        return len(classifier.feature_names)
    return 1


def output_dtype(output: str) -> np.dtype:
    """float32 for features, uint8 for everything the viewer shows."""
    check_output(output)
    return np.dtype(np.float32 if output == "features" else np.uint8)


def check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise InvalidRequestError(
            f"unknown export {output!r}; choose one of {', '.join(OUTPUTS)}"
        )
    return output


def encode_probabilities(
    probabilities: np.ndarray, *, output: str, label_values: Sequence[int]
) -> np.ndarray:
    """Turn uint8 probabilities (classes, z, y, x) into ``output`` as the viewer shows it.

    Segmentation and uncertainty are derived from the *uint8* probabilities, as the
    served volumes derive them from the cached uint8 probability blocks.
    """
    if output == "probabilities":
        return probabilities
    if output == "segmentation":
        return segmentation_from_probabilities(probabilities, label_values)
    if output == "uncertainty":
        scaled = probabilities.astype(np.float32) / 255.0
        return probabilities_to_uint8(uncertainty_from_probabilities(scaled))
    raise InvalidRequestError(f"{output!r} is not derived from probabilities")


def predict_block(
    classifier: PixelClassifier,
    computer: FeatureComputer,
    box: Box,
    *,
    output: str = "probabilities",
    level: int = 0,
) -> np.ndarray:
    """``output`` of ``box`` at pyramid ``level``, a C-ordered (c, z, y, x) array.

    Parameters
    ----------
    classifier
        The trained forest; its feature names must match ``computer``'s channels.
    computer
        Reads ``box`` grown by the halo, filters and crops. Whether it keeps features is
        its cache's business (batch workers give it a zero budget).
    box
        The block, in voxels of ``level``.
    output
        One of :data:`OUTPUTS`.
    level
        Pyramid level of the source.

    Returns
    -------
    ndarray
        uint8 probabilities (classes), segmentation (1, class value of the argmax),
        uncertainty (1, 1 − (p1 − p2) scaled to 0..255) or float32 features.
    """
    check_output(output)
    features = computer.features(level, box)
    if output == "features":
        return np.ascontiguousarray(features, dtype=np.float32)
    check_cancelled()
    probabilities = probabilities_to_uint8(classifier.predict_proba(features))
    return encode_probabilities(probabilities, output=output, label_values=classifier.label_values)
