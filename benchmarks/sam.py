"""SAM benchmark: embedding time and click-to-mask latency per model size, cached and not.

Models are randomly initialised with the real architectures (segment-anything's builders;
vit_t needs MobileSAM's ``mobile_sam`` package, which PyPI lacks, and is skipped without
it), saved as checkpoints and loaded through :func:`ilastik_web.sam.load_model`, so the
figures are those of real weights (speed does not depend on the values). For each model:

- embedding of one slice, uncached (computed), from the on-disk zarr cache, from memory;
- click-to-mask: one positive point on a slice whose embedding is cached (the usual
  click), and on a slice not embedded yet (embedding + decode, JSON included), through
  :meth:`SamService.prompt`; and the JSON encoding (run lengths + polygons) on its own.

Run: ``.venv-sam/bin/python benchmarks/sam.py [--models tiny vit_b] [--size 1024]
[--clicks 10] [--device cpu|cuda]``. Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ilastik_web.sam import ModelSpec, SamService, SamSettings
from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sources.array import ArrayVolume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sam"))


def random_model(name: str):
    """(model_type, randomly initialised Sam) for a model size name."""
    if name == "tiny":
        from sam_fixtures import build_tiny_sam

        return "vit_b", build_tiny_sam()
    if name == "vit_t":
        from mobile_sam import sam_model_registry  # type: ignore[import-not-found]

        return "vit_t", sam_model_registry["vit_t"]()
    from segment_anything import sam_model_registry

    return name, sam_model_registry[name]()


def test_volume(size: int, slices: int = 3) -> ArrayVolume:
    rng = np.random.default_rng(0)
    data = rng.normal(40, 8, size=(1, slices, size, size))
    yy, xx = np.mgrid[:size, :size]
    for _ in range(12):
        cy, cx, r = rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size, size / 20
        data[:, :, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 120
    return ArrayVolume(np.clip(data, 0, 255).astype(np.uint8), (40.0, 4.0, 4.0),
                       key=f"bench-{size}")


def bench(name: str, size: int, clicks: int, device: str | None, folder: Path) -> dict:
    try:
        model_type, sam = random_model(name)
    except ImportError as exc:
        return {"model": name, "skipped": f"{exc}"}
    checkpoint = folder / f"{name}.pt"
    torch.save(sam.state_dict(), checkpoint)
    del sam
    settings = SamSettings(models=(ModelSpec(name, model_type, checkpoint),), device=device,
                           embedding_dir=folder / "emb")
    service = SamService(settings)
    volume = test_volume(size)
    t0 = time.perf_counter()
    model = service.models.get()
    load_s = time.perf_counter() - t0
    ref = SliceRef(volume.shape, "xy", 0)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    uncached = timed(lambda: service.embeddings.get(volume, ref, model))
    memory = timed(lambda: service.embeddings.get(volume, ref, model))
    service.embeddings.memory.clear()
    disk = timed(lambda: service.embeddings.get(volume, ref, model))
    tiles = len(service.embeddings.tiles(ref, model))

    rng = np.random.default_rng(1)
    latencies, encodings = [], []
    for _ in range(clicks):
        x, y = rng.uniform(0, size, 2)
        started = time.perf_counter()
        mask = service.prompt(volume, "bench", "xy", 0, points_xyz=[[x, y, 0.5]],
                              point_labels=[1])
        latencies.append(time.perf_counter() - started)
        encodings.append(timed(mask.to_json))
    first_click = timed(lambda: service.prompt(
        volume, "bench", "xy", 1, points_xyz=[[size / 2, size / 2, 1.5]],
        point_labels=[1]).to_json())
    service.close()
    return {
        "model": name, "device": model.device, "slice": [size, size], "tiles": tiles,
        "model_input": model.image_size, "load_s": round(load_s, 3),
        "embed_uncached_s": round(uncached, 3), "embed_disk_s": round(disk, 4),
        "embed_memory_s": round(memory, 5),
        "click_cached_median_ms": round(1000 * statistics.median(latencies), 1),
        "click_cached_max_ms": round(1000 * max(latencies), 1),
        # Random weights give ragged masks of many rings; real masks encode faster.
        "encode_json_median_ms": round(1000 * statistics.median(encodings), 1),
        "click_uncached_s": round(first_click, 3),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "vit_b"],
                        help="tiny, vit_t, vit_b, vit_l, vit_h")
    parser.add_argument("--size", type=int, default=1024, help="slice side in pixels")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if any)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(json.dumps(bench(name, args.size, args.clicks, args.device, Path(tmp))),
                  flush=True)


if __name__ == "__main__":
    main()
