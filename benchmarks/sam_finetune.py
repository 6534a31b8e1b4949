"""Fine-tuning speed: optimiser steps per second of :func:`ilastik_web.sam.finetune.finetune`
(micro-sam's SamTrainer) on CPU, and on CUDA when present, in the same run.

The training set is synthetic (noisy bright blobs, labelled by thresholding), written in
the ``tiff`` layout; the model is randomly initialised with a real architecture
(``--model vit_b``, segment-anything's builder) or the tests' tiny one (``--model tiny``).
Speed does not depend on the weights. Prints one JSON line per device.

Peer: a plain torch training step of the same model on the same device, measured in the
same run: the image encoder on one input of the model's size, the prompt encoder with one
box per object, the mask decoder, a BCE loss, backward and an AdamW step.
``ratio_vs_plain_step`` is micro-sam's steps per second over the plain steps per second;
below 1 is what its data loading, prompt sampling and ``n_sub_iteration`` iterative
prompting rounds per step cost on top.

Run: ``.venv/bin/python benchmarks/sam_finetune.py [--model tiny|vit_b] [--steps 5]
[--patch 256] [--devices cpu cuda]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ilastik_web.argtypes import positive
from ilastik_web.sam import ModelSpec
from ilastik_web.sam.finetune import FinetuneSettings, finetune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sam"))


def write_set(folder: Path, side: int, items: int = 3) -> None:
    import tifffile
    from sam_fixtures import blobs
    from scipy import ndimage

    for i in range(items):
        split = "val" if i == items - 1 else "train"
        image = blobs((1, side, side), seed=i)[0, 0]
        labels = ndimage.label(image > 100)[0].astype(np.uint32)
        for kind, data in (("images", image), ("labels", labels)):
            (folder / split / kind).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(folder / split / kind / f"i{i}.tif", data)


def model_checkpoint(name: str, folder: Path) -> ModelSpec:
    if name == "tiny":
        from sam_fixtures import build_tiny_sam

        sam, model_type = build_tiny_sam(), "vit_b"
    else:
        from segment_anything import sam_model_registry

        sam, model_type = sam_model_registry[name](), name
    path = folder / f"{name}.pt"
    torch.save(sam.state_dict(), path)
    return ModelSpec(name, model_type, path)


def plain_steps_per_s(spec: ModelSpec, device: str, steps: int, objects: int) -> float:
    """The peer: plain forward/backward/AdamW steps per second of the same model."""
    import time

    from ilastik_web.sam import load_model

    sam = load_model(spec, device).sam
    sam.train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-5)
    size = int(sam.image_encoder.img_size)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, size, size, generator=generator).to(device)
    corners = torch.rand(objects, 2, generator=generator) * size / 2
    boxes = torch.cat([corners, corners + size / 4], dim=1).to(device)
    target = (torch.rand(objects, 1, size // 4, size // 4, generator=generator) > 0.5)
    target = target.float().to(device)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        optimizer.zero_grad()
        embedding = sam.image_encoder(image)
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        masks, iou = sam.mask_decoder(image_embeddings=embedding,
                                      image_pe=sam.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse,
                                      dense_prompt_embeddings=dense, multimask_output=False)
        loss = loss_fn(masks, target) + 0.0 * iou.sum()
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocations, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"],
                        help="architecture, randomly initialised")
    parser.add_argument("--steps", type=positive(), default=5, help="optimiser steps timed")
    parser.add_argument("--patch", type=positive(), default=256, help="patch side, pixels")
    parser.add_argument("--objects", type=positive(), default=10,
                        help="objects sampled per batch")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"],
                        help="devices to time (cuda skipped when absent)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_set(folder / "set", max(args.patch, 64))
        spec = model_checkpoint(args.model, folder)
        for device in args.devices:
            if device.startswith("cuda") and not torch.cuda.is_available():
                print(json.dumps({"device": device, "skipped": "no CUDA device"}))
                continue
            settings = FinetuneSettings(iterations=args.steps, patch_shape=(args.patch,) * 2,
                                        n_objects_per_batch=args.objects, n_sub_iteration=4)
            result = finetune(spec, folder / "set", folder / f"out-{device}.pt", settings,
                              device=device)
            plain = plain_steps_per_s(spec, device, args.steps, args.objects)
            print(json.dumps({"model": args.model, "device": device, "patch": args.patch,
                              "steps": args.steps, "seconds": result["seconds"],
                              "steps_per_s": result["steps_per_s"],
                              "plain_steps_per_s": round(plain, 4),
                              "ratio_vs_plain_step": round(result["steps_per_s"] / plain, 3)}),
                  flush=True)


if __name__ == "__main__":
    main()
