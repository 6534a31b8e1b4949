"""Prompts to masks: points, a box and the previous mask, decoded on a slice's embedding.

Prompt coordinates are continuous pixel coordinates (column, row) of the slice image,
as :meth:`~ilastik_web.sam.geometry.SliceRef.to_pixels` gives them. A prompt is decoded
in the one tile whose inner region holds the prompt's centre; the mask is pasted back
into slice coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.embeddings import SliceEmbedding
from ilastik_web.sam.geometry import tile_for
from ilastik_web.sam.models import LoadedModel

MAX_POINTS = 64


@dataclass(frozen=True)
class Prompt:
    """What the user gave on one slice.

    Parameters
    ----------
    points_cr
        (n, 2) continuous (column, row) positions.
    point_labels
        (n,) 1 for a positive point, 0 for a negative one.
    box_cr
        (column0, row0, column1, row1) continuous corners, or None.
    mask_logits
        Low-resolution logits (1, s, s) of a previous mask to refine, or None.
    mask_tile
        The tile ``mask_logits`` belongs to (decoding then stays in that tile).
    """

    points_cr: np.ndarray
    point_labels: np.ndarray
    box_cr: tuple[float, float, float, float] | None = None
    mask_logits: np.ndarray | None = None
    mask_tile: int | None = None

    @classmethod
    def make(cls, points_cr: Sequence[Sequence[float]] = (), point_labels: Sequence[int] = (),
             box_cr: Sequence[float] | None = None, mask_logits: np.ndarray | None = None,
             mask_tile: int | None = None) -> Prompt:
        points = np.asarray(points_cr, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
        if len(points) > MAX_POINTS:
            raise InvalidRequestError(f"at most {MAX_POINTS} points per prompt")
        if len(labels) != len(points):
            raise InvalidRequestError("give one label (1 positive, 0 negative) per point")
        if not np.isin(labels, (0, 1)).all():
            raise InvalidRequestError("point labels must be 1 (positive) or 0 (negative)")
        if not np.isfinite(points).all():
            raise InvalidRequestError("points must be finite")
        box = None
        if box_cr is not None:
            b = [float(v) for v in box_cr]
            if len(b) != 4 or not np.isfinite(b).all():
                raise InvalidRequestError("a box needs four finite corner coordinates")
            box = (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
            if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
                raise InvalidRequestError("the box has no area")
        if not len(points) and box is None and mask_logits is None:
            raise InvalidRequestError("a prompt needs a point, a box or a previous mask")
        return cls(points, labels, box, mask_logits, mask_tile)

    def centre_cr(self) -> tuple[float, float]:
        """Where the prompt is: the box centre, else the first positive (or any) point."""
        if self.box_cr is not None:
            c0, r0, c1, r1 = self.box_cr
            return ((c0 + c1) / 2, (r0 + r1) / 2)
        if len(self.points_cr):
            positive = self.points_cr[self.point_labels == 1]
            point = positive[0] if len(positive) else self.points_cr[0]
            return (float(point[0]), float(point[1]))
        raise InvalidRequestError("a prompt with only a previous mask has no position")


@dataclass(frozen=True)
class Decoded:
    """A decoded mask on a slice."""

    image_box: Box  # (row, column) box of ``mask`` in the slice image (the tile's extent)
    mask: np.ndarray  # bool, shaped like image_box
    score: float  # SAM's predicted IoU
    logits: np.ndarray  # (1, s, s) low-resolution logits, to refine with
    tile: int


def decode(model: LoadedModel, embedding: SliceEmbedding, prompt: Prompt,
           multimask: bool | None = None) -> Decoded:
    """Decode ``prompt`` on ``embedding``.

    Parameters
    ----------
    multimask
        Let SAM propose three masks and keep the best scored; default: only for a single
        point without box or mask (SAM's advice for ambiguous prompts).
    """
    import torch

    if prompt.mask_tile is not None:
        tile_index = prompt.mask_tile
        if not 0 <= tile_index < len(embedding.tiles):
            raise InvalidRequestError("the previous mask belongs to another tiling")
    else:
        tile_index = tile_for(embedding.tiles, prompt.centre_cr())
    tile = embedding.tiles[tile_index]
    r0, c0 = tile.outer.start
    rows, cols = tile.outer.shape
    predictor = model.predictor()
    predictor.features = torch.tensor(embedding.features[tile_index][None], device=model.device)
    predictor.original_size = (rows, cols)
    predictor.input_size = predictor.transform.get_preprocess_shape(rows, cols, model.image_size)
    predictor.is_image_set = True

    point_coords = point_labels = None
    if len(prompt.points_cr):
        # SAM takes pixel indices (it adds 0.5 itself); ours are continuous coordinates.
        point_coords = prompt.points_cr - np.array([c0 + 0.5, r0 + 0.5])
        point_labels = prompt.point_labels
    box = None
    if prompt.box_cr is not None:
        bc0, br0, bc1, br1 = prompt.box_cr
        box = np.array([max(bc0, c0) - c0, max(br0, r0) - r0,
                        min(bc1, c0 + cols) - c0, min(br1, r0 + rows) - r0])
    if multimask is None:
        multimask = point_coords is not None and len(point_coords) == 1 and box is None \
            and prompt.mask_logits is None
    with torch.inference_mode():
        masks, scores, logits = predictor.predict(
            point_coords=point_coords, point_labels=point_labels, box=box,
            mask_input=prompt.mask_logits, multimask_output=multimask,
        )
    best = int(np.argmax(scores))
    return Decoded(tile.outer, np.asarray(masks[best], dtype=bool), float(scores[best]),
                   np.asarray(logits[best][None], dtype=np.float32), tile_index)


def mask_to_logits(mask: np.ndarray, size: int, eps: float = 1e-3) -> np.ndarray:
    """A binary tile mask as SAM's low-resolution mask input (1, size, size).

    The mask is resized so its longer side is ``size`` (as SAM resizes images), padded
    with background to a square, and mapped to confident logits.
    """
    import torch
    import torch.nn.functional as F

    rows, cols = mask.shape
    scale = size / max(rows, cols)
    new = (max(1, int(rows * scale + 0.5)), max(1, int(cols * scale + 0.5)))
    small = F.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None], size=new,
                          mode="bilinear", align_corners=False)[0, 0].numpy()
    padded = np.zeros((size, size), dtype=np.float32)
    padded[: new[0], : new[1]] = small > 0.5
    hi, lo = np.log((1 - eps) / eps), np.log(eps / (1 - eps))
    return np.where(padded > 0.5, hi, lo).astype(np.float32)[None]
