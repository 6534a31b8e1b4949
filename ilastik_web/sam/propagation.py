"""Propagate a mask through neighbouring slices, the way micro-sam segments an object in 3D.

From the mask on one slice, the next slice is segmented with prompts projected from the
previous slice's mask (its box, its mask as a low-resolution prompt, or its innermost
point), and so on in both directions; propagation stops where the new mask is empty, or
overlaps the previous one with an IoU below a threshold (the object ended or SAM lost
it), or at the range asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.embeddings import EmbeddingStore
from ilastik_web.sam.geometry import SliceRef, tile_for
from ilastik_web.sam.models import LoadedModel
from ilastik_web.sam.prompts import Prompt, decode, mask_to_logits

log = logging.getLogger(__name__)

Projection = Literal["mask", "box", "single_point", "point_and_mask"]
PROJECTIONS: tuple[Projection, ...] = ("mask", "box", "single_point", "point_and_mask")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def project_prompt(mask: np.ndarray, tiles, model: LoadedModel, projection: Projection,
                   ) -> Prompt:
    """Prompts for the next slice from a full-slice 2D mask of the previous one."""
    from scipy import ndimage

    if projection not in PROJECTIONS:
        raise InvalidRequestError(f"projection must be one of {PROJECTIONS}")
    bbox = Box.of_mask(mask)
    (r0, c0), (r1, c1) = bbox.start, bbox.stop
    tile_index = tile_for(tiles, ((c0 + c1) / 2, (r0 + r1) / 2))
    outer = tiles[tile_index].outer
    box = (float(c0), float(r0), float(c1), float(r1))
    points, labels = np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    if projection in ("single_point", "point_and_mask"):
        inner = ndimage.distance_transform_edt(np.pad(mask[bbox.slices], 1))[1:-1, 1:-1]
        r, c = np.unravel_index(int(np.argmax(inner)), inner.shape)
        points = np.array([[c0 + c + 0.5, r0 + r + 0.5]])
        labels = np.ones(1, dtype=np.int64)
    logits = None
    if projection in ("mask", "point_and_mask"):
        logits = mask_to_logits(mask[outer.slices], model.image_size // 4)
    use_box = projection in ("mask", "box")
    return Prompt.make(points, labels, box if use_box else None, logits, tile_index)


@dataclass(frozen=True)
class Propagated:
    """Full-slice 2D masks by slice index (the start slice included) and their scores."""

    masks: dict[int, np.ndarray]
    scores: dict[int, float]
    stopped: dict[str, str]  # direction -> why it stopped


def propagate(
    volume: LazyVolume,
    store: EmbeddingStore,
    model: LoadedModel,
    start: SliceRef,
    start_mask: np.ndarray,
    *,
    lower: int,
    upper: int,
    iou_threshold: float = 0.8,
    projection: Projection = "mask",
    report: Callable[[float, str], None] = lambda p, m: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Propagated:
    """Segment the object of ``start_mask`` (a full 2D mask of slice ``start``) through
    slices ``lower..upper`` (inclusive, clipped to the volume).
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise InvalidRequestError("iou_threshold must be in [0, 1]")
    if projection not in PROJECTIONS:
        raise InvalidRequestError(f"projection must be one of {PROJECTIONS}")
    extent = start.shape[start.normal]
    lower, upper = max(0, int(lower)), min(extent - 1, int(upper))
    if not lower <= start.index <= upper:
        raise InvalidRequestError(f"the range {lower}..{upper} does not hold slice {start.index}")
    if not start_mask.any():
        raise InvalidRequestError("cannot propagate an empty mask")
    masks = {start.index: start_mask}
    scores: dict[int, float] = {}
    stopped = {}
    total = max(1, upper - lower)
    done = 0
    for direction, end in ((-1, lower), (1, upper)):
        name = "down" if direction < 0 else "up"
        previous = start_mask
        index = start.index + direction
        stopped[name] = "range end"
        while (index >= end) if direction < 0 else (index <= end):
            if should_stop():
                from ilastik_web.sam.embeddings import Cancelled

                raise Cancelled("propagation cancelled")
            ref = start.with_index(index)
            embedding = store.get(volume, ref, model, should_stop)
            prompt = project_prompt(previous, embedding.tiles, model, projection)
            decoded = decode(model, embedding, prompt, multimask=False)
            current = np.zeros(ref.image_shape, dtype=bool)
            current[decoded.image_box.slices] = decoded.mask
            done += 1
            report(done / total, f"slice {index}")
            if not current.any():
                stopped[name] = f"empty mask at slice {index}"
                break
            overlap = iou(previous, current)
            if overlap < iou_threshold:
                stopped[name] = f"IoU {overlap:.2f} < {iou_threshold} at slice {index}"
                break
            masks[index] = current
            scores[index] = decoded.score
            previous = current
            index += direction
    return Propagated(masks, scores, stopped)
