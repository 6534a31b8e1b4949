"""3D propagation: ours (:func:`ilastik_web.sam.propagation.propagate`) against micro-sam's
``segment_mask_in_volume``, on the same volume, model and start mask.

The volume holds ellipsoids (a known ground truth); the start mask is the ground truth of
the middle slice of the largest one. Three runs:

- ``ours``: our lazy, per-slice propagation with our embedding store (embeddings computed
  on demand, slice by slice);
- ``micro_sam``: micro-sam end to end, its own embeddings of the whole stack first
  (``micro_sam.util.precompute_image_embeddings``), then ``segment_mask_in_volume``;
- ``micro_sam_on_our_embeddings``: micro-sam's propagation fed our embeddings, so that
  any difference from ``ours`` is the propagation algorithm alone.

Reported per run: seconds, slices segmented, 3D IoU against the ground truth, and the
3D IoU of each run with ``ours``. With the default tiny random model the IoU against the
truth means nothing (random weights); give ``--checkpoint`` (a real SAM / micro-sam
model, e.g. vit_b_lm) for quality. Run:
``.venv/bin/python benchmarks/sam_propagation.py [--checkpoint PATH --model-type vit_b_lm]
[--size 128] [--slices 24] [--projection mask] [--iou-threshold 0.8] [--device cpu]``.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ilastik_web.argtypes import positive
from ilastik_web.sam import ModelSpec, load_model
from ilastik_web.sam.embeddings import EmbeddingStore, slice_image
from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sam.propagation import PROJECTIONS, iou, propagate
from ilastik_web.sources.array import ArrayVolume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sam"))

log = logging.getLogger("benchmarks.sam_propagation")

#: Our projection names and micro-sam's for the same prompts.
MICRO_SAM_PROJECTION = {"mask": "mask", "box": "box", "single_point": "single_point",
                        "point_and_mask": {"use_box": False, "use_mask": True,
                                           "use_points": True, "use_single_point": True}}


def ellipsoids(slices: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image (1, z, y, x) uint8, labels (z, y, x) uint16) of a few noisy ellipsoids."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((slices, size, size), dtype=np.float32)
    image = rng.normal(30, 6, size=z.shape)
    labels = np.zeros(z.shape, dtype=np.uint16)
    for label in range(1, 5):
        centre = (slices / 2 + rng.uniform(-2, 2), *(rng.uniform(0.3, 0.7, 2) * size))
        radii = (slices * rng.uniform(0.3, 0.45), *(rng.uniform(0.1, 0.2, 2) * size))
        terms = zip((z, y, x), centre, radii, strict=True)
        inside = sum(((a - c) / r) ** 2 for a, c, r in terms) <= 1
        labels[inside & (labels == 0)] = label
        image[inside] += 120 + 20 * label
    return np.clip(image, 0, 255).astype(np.uint8)[None], labels


def stack_of(masks: dict[int, np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for index, mask in masks.items():
        out[index] = mask
    return out


def run_ours(volume, model, start_ref, start_mask, args) -> tuple[np.ndarray, float]:
    store = EmbeddingStore(memory_bytes=1 << 30)
    t0 = time.perf_counter()
    result = propagate(volume, store, model, start_ref, start_mask, lower=0,
                       upper=volume.shape[0] - 1, iou_threshold=args.iou_threshold,
                       projection=args.projection)
    return stack_of(result.masks, volume.shape), time.perf_counter() - t0


def run_micro_sam(model, embeddings, start_index, start_mask, shape, args) -> np.ndarray:
    from micro_sam.multi_dimensional_segmentation import segment_mask_in_volume

    segmentation = np.zeros(shape, dtype=np.uint32)
    segmentation[start_index] = start_mask
    segmentation, _ = segment_mask_in_volume(
        segmentation, model.predictor(), embeddings, np.array([start_index]),
        stop_lower=False, stop_upper=False, iou_threshold=args.iou_threshold,
        projection=MICRO_SAM_PROJECTION[args.projection])
    return segmentation > 0


def our_embeddings_for_micro_sam(volume, model) -> dict:
    """Our per-slice embeddings (one tile per slice) in micro-sam's 3D layout."""
    store = EmbeddingStore(memory_bytes=1 << 30)
    refs = [SliceRef(volume.shape, "xy", z) for z in range(volume.shape[0])]
    features = [store.get(volume, ref, model).features for ref in refs]
    if any(f.shape[0] != 1 for f in features):
        raise SystemExit("slices larger than the model input are tiled; use a smaller --size")
    predictor = model.predictor()
    rows, cols = refs[0].image_shape
    return {"features": np.stack(features), "original_size": (rows, cols),
            "input_size": predictor.transform.get_preprocess_shape(rows, cols,
                                                                   model.image_size)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path,
                        help="a SAM / micro-sam checkpoint; default: a tiny random model")
    parser.add_argument("--model-type", default="vit_b",
                        help="model type of --checkpoint (vit_b, vit_b_lm, ...)")
    parser.add_argument("--size", type=positive(), default=128, help="slice side, pixels")
    parser.add_argument("--slices", type=positive(), default=24, help="slices of the stack")
    parser.add_argument("--projection", choices=PROJECTIONS, default="mask",
                        help="prompts carried from slice to slice")
    parser.add_argument("--iou-threshold", type=float, default=0.8,
                        help="stop where consecutive masks overlap less than this")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, model_type = args.checkpoint, args.model_type
        if checkpoint is None:
            from sam_fixtures import build_tiny_sam

            checkpoint, model_type = Path(tmp) / "tiny.pt", "vit_b"
            # micro-sam assumes 1024-pixel model inputs (256² mask prompts)
            torch.save(build_tiny_sam(image_size=1024).state_dict(), checkpoint)
        model = load_model(ModelSpec("bench", model_type, checkpoint), device=args.device)
        image, labels = ellipsoids(args.slices, args.size)
        volume = ArrayVolume(image, (1.0, 1.0, 1.0), key="propagation-bench")
        start = args.slices // 2
        target = int(np.bincount(labels[start].ravel())[1:].argmax()) + 1
        truth = labels == target
        start_ref = SliceRef(volume.shape, "xy", start)
        start_mask = truth[start]

        ours, ours_s = run_ours(volume, model, start_ref, start_mask, args)

        from micro_sam.util import precompute_image_embeddings

        t0 = time.perf_counter()
        stack = np.stack([slice_image(volume, SliceRef(volume.shape, "xy", z))[..., 0]
                          for z in range(args.slices)])
        embeddings = precompute_image_embeddings(model.predictor(), stack, ndim=3,
                                                 verbose=False)
        micro = run_micro_sam(model, embeddings, start, start_mask, volume.shape, args)
        micro_s = time.perf_counter() - t0

        ours_embeddings = our_embeddings_for_micro_sam(volume, model)
        t0 = time.perf_counter()
        micro_ours = run_micro_sam(model, ours_embeddings, start, start_mask, volume.shape,
                                   args)
        micro_ours_s = time.perf_counter() - t0

    def summary(mask: np.ndarray, seconds: float) -> dict:
        return {"seconds": round(seconds, 3),
                "slices": int(np.count_nonzero(mask.any(axis=(1, 2)))),
                "iou_truth": round(iou(mask, truth), 4),
                "iou_with_ours": round(iou(mask, ours), 4)}

    print(json.dumps({
        "model": str(args.checkpoint or "tiny-random"), "device": model.device,
        "shape": list(volume.shape), "projection": args.projection,
        "iou_threshold": args.iou_threshold, "truth_slices": int(truth.any(axis=(1, 2)).sum()),
        "ours": summary(ours, ours_s),
        "micro_sam": summary(micro, micro_s),
        "micro_sam_on_our_embeddings": summary(micro_ours, micro_ours_s),
    }))


if __name__ == "__main__":
    main()
