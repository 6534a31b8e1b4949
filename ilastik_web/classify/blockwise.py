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


#: The dtypes each export can be stored as, the default (what the viewer shows) first.
#: Probabilities and uncertainty: uint8 and uint16 scale 0..1 to 0..255 and 0..65535,
#: float32 keeps the forest's own values; segmentation holds class values.
OUTPUT_DTYPES: dict[str, tuple[str, ...]] = {
    "probabilities": ("uint8", "uint16", "float32"),
    "segmentation": ("uint8", "uint16"),
    "uncertainty": ("uint8", "uint16", "float32"),
    "features": ("float32",),
}


def output_dtype(output: str, dtype: str | None = None) -> np.dtype:
    """The stored dtype of ``output``: ``dtype`` if that export allows it, else its default
    (float32 for features, uint8 for everything the viewer shows).

    Raises
    ------
    InvalidRequestError
        ``dtype`` is not one of :data:`OUTPUT_DTYPES` for ``output``.
    """
    check_output(output)
    allowed = OUTPUT_DTYPES[output]
    if dtype is None:
        return np.dtype(allowed[0])
    if dtype not in allowed:
        raise InvalidRequestError(
            f"{output} cannot be stored as {dtype!r}; choose one of {', '.join(allowed)}"
        )
    return np.dtype(dtype)


def scale_fraction(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """[0, 1] values as ``dtype``: float32 as they are, integers scaled to their full range
    (rounded)."""
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)
    top = float(np.iinfo(dtype).max)
    return np.clip(np.rint(values * top), 0, top).astype(dtype)


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
    dtype: str | None = None,
    threads: int | None = None,
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
    dtype
        One of :data:`OUTPUT_DTYPES` for ``output``; None: the default, exactly what the
        viewer shows. Other dtypes come from the forest's float probabilities.
    threads
        Threads of the forest's prediction (default: its ``n_jobs``); the numbers do not
        depend on them.

    Returns
    -------
    ndarray
        By default uint8 probabilities (classes), segmentation (1, class value of the
        argmax), uncertainty (1, 1 − (p1 − p2) scaled to 0..255) or float32 features.
    """
    stored = output_dtype(output, dtype)
    features = computer.features(level, box)
    if output == "features":
        return np.ascontiguousarray(features, dtype=np.float32)
    check_cancelled()
    proba = classifier.predict_proba(features, threads=threads)
    if stored == np.uint8:
        probabilities = probabilities_to_uint8(proba)
        return encode_probabilities(probabilities, output=output,
                                    label_values=classifier.label_values)
    if output == "segmentation":
        values = np.asarray(classifier.label_values, dtype=stored)
        return np.ascontiguousarray(values[np.argmax(proba, axis=0)][None])
    if output == "uncertainty":
        proba = uncertainty_from_probabilities(proba)
    return np.ascontiguousarray(scale_fraction(proba, stored))
