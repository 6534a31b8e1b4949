"""Automatic instance segmentation ("segment everything") with micro-sam's own code.

Two methods, as in micro-sam:

- ``amg``: automatic mask generation, SAM prompted with a grid of points and the masks
  filtered by predicted IoU and stability (``micro_sam.instance_segmentation.
  AutomaticMaskGenerator``);
- ``ais``: automatic instance segmentation with the UNETR decoder that micro-sam's light-
  and electron-microscopy models carry (``decoder_state`` in their checkpoint) and a seeded
  watershed (``InstanceSegmentationWithDecoder``).

Both run through ``micro_sam.automatic_segmentation.automatic_instance_segmentation`` on
a 2D image or a small 3D block (slices segmented, then merged across slices by micro-sam);
images larger than the model input are tiled. The model is the server's own
:class:`~ilastik_web.sam.models.LoadedModel`; nothing is downloaded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.models import LoadedModel

log = logging.getLogger(__name__)

Method = Literal["auto", "amg", "ais"]
METHODS: tuple[Method, ...] = ("auto", "amg", "ais")
#: Largest image (pixels per slice times slices) one call segments.
MAX_PIXELS = 64 << 20


@dataclass(frozen=True)
class AutoParams:
    """Parameters of automatic segmentation (micro-sam's names and defaults).

    Attributes
    ----------
    method
        "amg", "ais", or "auto": AIS when the model has a decoder, else AMG.
    points_per_side
        AMG: the point grid's side.
    pred_iou_thresh, stability_score_thresh, box_nms_thresh
        AMG: mask filters.
    center_distance_threshold, boundary_distance_threshold, foreground_threshold
        AIS: watershed seeds and foreground.
    min_size
        Objects smaller than this (pixels) are dropped.
    """

    method: Method = "auto"
    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    center_distance_threshold: float = 0.5
    boundary_distance_threshold: float = 0.5
    foreground_threshold: float = 0.5
    min_size: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidRequestError(f"method must be one of {METHODS}")
        if not 1 <= int(self.points_per_side) <= 128:
            raise InvalidRequestError("points_per_side must be in 1..128")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
                     "center_distance_threshold", "boundary_distance_threshold",
                     "foreground_threshold"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise InvalidRequestError(f"{name} must be in [0, 1]")
        if int(self.min_size) < 0:
            raise InvalidRequestError("min_size must be >= 0")

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AutoParams:
        """From a JSON object holding any of the attributes (others are refused)."""
        if not isinstance(body, dict):
            raise InvalidRequestError("params must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(body) - known
        if unknown:
            raise InvalidRequestError(f"unknown parameters {sorted(unknown)}; known: "
                                      f"{sorted(known)}")
        for name, value in body.items():
            if name != "method" and (isinstance(value, bool)
                                     or not isinstance(value, int | float)):
                raise InvalidRequestError(f"{name} must be a number")
        return cls(**body)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_decoder_state(model: LoadedModel) -> dict | None:
    """The UNETR decoder weights in ``model``'s checkpoint (micro-sam's ``decoder_state``),
    or None when the checkpoint has none (plain SAM models)."""
    import torch

    path = model.spec.checkpoint
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch-em checkpoints pickle training objects too (operator's file)
        state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("decoder_state"), dict):
        return state["decoder_state"]
    return None


class Decoders:
    """micro-sam instance decoders by model, read from each checkpoint once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._decoders: dict[str, object | None] = {}

    def get(self, model: LoadedModel):
        """The model's ``DecoderAdapter``, or None when its checkpoint has no decoder."""
        with self._lock:
            if model.model_hash in self._decoders:
                return self._decoders[model.model_hash]
        state = read_decoder_state(model)
        decoder = None
        if state is not None:
            from micro_sam.instance_segmentation import get_decoder

            try:
                decoder = get_decoder(model.sam.image_encoder, state, model.device)
            except RuntimeError as exc:
                raise InvalidRequestError(
                    f"model {model.spec.name!r}: its decoder does not fit: {exc}") from None
            decoder.eval()
        with self._lock:
            self._decoders[model.model_hash] = decoder
        return decoder


def segment_everything(model: LoadedModel, image: np.ndarray, params: AutoParams,
                       decoder=None, *, halo: int = 64) -> np.ndarray:
    """Instance labels of ``image`` found without prompts.

    Parameters
    ----------
    model
        The SAM model.
    image
        (rows, cols, 3) uint8 RGB, or (slices, rows, cols, 3) for a block.
    params
        Method and thresholds; "ais" needs ``decoder``.
    decoder
        From :meth:`Decoders.get` (None: no AIS).
    halo
        Tile overlap when the image is larger than the model input.

    Returns
    -------
    numpy.ndarray
        uint32 labels shaped like ``image`` without its channel axis (0: background),
        numbered 1..n.
    """
    import torch
    from micro_sam.automatic_segmentation import automatic_instance_segmentation
    from micro_sam.instance_segmentation import (
        AutomaticMaskGenerator,
        InstanceSegmentationWithDecoder,
        TiledAutomaticMaskGenerator,
        TiledInstanceSegmentationWithDecoder,
    )
    from skimage.segmentation import relabel_sequential

    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise InvalidRequestError("segment_everything takes uint8 RGB (rows, cols, 3) or "
                                  "(slices, rows, cols, 3)")
    if image.size // 3 > MAX_PIXELS:
        raise InvalidRequestError(f"at most {MAX_PIXELS} pixels at once")
    method = params.method
    if method == "auto":
        method = "ais" if decoder is not None else "amg"
    if method == "ais" and decoder is None:
        raise InvalidRequestError(f"model {model.spec.name!r} has no instance decoder (AIS "
                                  "needs a micro-sam model with decoder_state); use amg")
    ndim = image.ndim - 1
    side = model.image_size
    tiled = max(image.shape[-3:-1]) > side
    tile_shape = halo_shape = None
    if tiled:
        halo = min(int(halo), side // 4)
        tile_shape, halo_shape = (side - 2 * halo,) * 2, (halo,) * 2
    predictor = model.predictor()
    if method == "amg":
        cls = TiledAutomaticMaskGenerator if tiled else AutomaticMaskGenerator
        segmenter = cls(predictor, points_per_side=int(params.points_per_side))
        generate = {"pred_iou_thresh": params.pred_iou_thresh,
                    "stability_score_thresh": params.stability_score_thresh,
                    "box_nms_thresh": params.box_nms_thresh,
                    "min_mask_region_area": int(params.min_size)}
    else:
        cls = TiledInstanceSegmentationWithDecoder if tiled else InstanceSegmentationWithDecoder
        segmenter = cls(predictor, decoder)
        generate = {"center_distance_threshold": params.center_distance_threshold,
                    "boundary_distance_threshold": params.boundary_distance_threshold,
                    "foreground_threshold": params.foreground_threshold,
                    "min_size": int(params.min_size)}
    data = image
    if ndim == 3:  # micro-sam segments blocks of one channel
        if not (np.array_equal(image[..., 0], image[..., 1])
                and np.array_equal(image[..., 0], image[..., 2])):
            raise InvalidRequestError("blocks are segmented on one channel; segment "
                                      "multi-channel data slice by slice")
        data = image[..., 0]
    with torch.inference_mode():
        labels = automatic_instance_segmentation(
            predictor, segmenter, data, ndim=ndim, tile_shape=tile_shape, halo=halo_shape,
            verbose=False, **generate)
    labels = np.asarray(labels)
    if labels.shape != image.shape[:-1]:
        raise RuntimeError(f"micro-sam returned labels {labels.shape} for {image.shape}")
    labels, _, _ = relabel_sequential(labels.astype(np.int64))
    log.info("%s found %d objects in %s", method, int(labels.max()), image.shape[:-1])
    return labels.astype(np.uint32)


def objects_of(labels: np.ndarray) -> list[tuple[Box, np.ndarray]]:
    """(box, boolean mask in the box) of each object 1..n of a label array."""
    from scipy import ndimage

    out = []
    for value, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        box = Box(tuple(s.start for s in found), tuple(s.stop for s in found))
        out.append((box, labels[found] == value))
    return out
