"""Benchmark: ilastik's full 3D feature set (61 channels) with `filters` against vigra.

Each implementation runs in its own process so peak memory is its own: ours in this venv
(numba on the CPU, and torch on CUDA when a GPU is present), vigra in Debian's
``/usr/bin/python3`` implementing ilastik's scheme (presmoothing per scale, then vigra's
filters with window 2), parallelised over scales with a thread pool as ilastik's request pool
does (vigra's filters release the GIL).

Usage::

    .venv/bin/python -m benchmarks.features [--sizes 128 256] [--repeats 2] [--threads 2]

Prints seconds (best of the repeats), Mvoxel/s, peak resident memory of the process and the
speed-up over vigra.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SYSTEM_PYTHON = "/usr/bin/python3"

VIGRA_SCRIPT = r"""
import json, math, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import vigra

size, repeats, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
scales = [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0]
image = vigra.taggedView(
    np.random.default_rng(0).random((size,) * 3, dtype=np.float32), "zyx")
f = vigra.filters

def scale_group(sigma):
    pre = math.sqrt(sigma ** 2 - 1.0) if sigma > 1.0 else sigma
    s = min(sigma, 1.0)
    smoothed = f.gaussianSmoothing(image, pre, window_size=3.5)
    out = {"GaussianSmoothing": f.gaussianSmoothing(smoothed, s, window_size=2.0)}
    if sigma < 0.5:
        return sigma, out
    out["LaplacianOfGaussian"] = f.laplacianOfGaussian(smoothed, s, window_size=2.0)
    out["GaussianGradientMagnitude"] = f.gaussianGradientMagnitude(smoothed, s, window_size=2.0)
    out["DifferenceOfGaussians"] = out["GaussianSmoothing"] - f.gaussianSmoothing(
        smoothed, s * 0.66, window_size=2.0)
    # desktop ilastik's order (fastfilters): gradient at s/2, smoothing at s
    out["StructureTensorEigenvalues"] = f.structureTensorEigenvalues(
        smoothed, s * 0.5, s, window_size=2.0)
    out["HessianOfGaussianEigenvalues"] = f.hessianOfGaussianEigenvalues(
        smoothed, s, window_size=2.0)
    return sigma, out

def run():
    with ThreadPoolExecutor(threads) as pool:
        results = dict(pool.map(scale_group, sorted(scales, reverse=True)))
    channels = sum(
        1 if a.ndim == 3 else a.shape[-1] for r in results.values() for a in r.values())
    assert channels == 61, channels
    return results

best = math.inf
for _ in range(repeats):
    start = time.perf_counter()
    results = run()
    best = min(best, time.perf_counter() - start)
    del results
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": best, "peak_bytes": peak}))
"""


def _ours(size: int, repeats: int, device: str) -> dict:
    """Time `filters.compute_features` on a random float32 cube, in this process."""
    import filters

    image = np.random.default_rng(0).random((1, size, size, size), dtype=np.float32)
    filters.compute_features(image[:, :24, :24, :24], "all", ndim=3, device=device)  # JIT
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        features = filters.compute_features(image, "all", ndim=3, device=device)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        assert features.shape == (61, size, size, size)
        del features
    result = {
        "seconds": best,
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if device.startswith("cuda"):
        import torch

        result["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    return result


def _run_ours(size: int, repeats: int, device: str, threads: int) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "benchmarks.features", "--worker", device]
    command += ["--sizes", str(size), "--repeats", str(repeats)]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"our worker failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_vigra(size: int, repeats: int, threads: int) -> dict | None:
    if not Path(SYSTEM_PYTHON).exists():
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(VIGRA_SCRIPT)
    try:
        command = [SYSTEM_PYTHON, script.name, str(size), str(repeats), str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        print(f"vigra skipped: {done.stderr.strip().splitlines()[-1]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _line(name: str, size: int, result: dict, baseline: dict | None) -> str:
    voxels = size**3
    text = (
        f"{size}³ {name:<12} {result['seconds']:8.2f} s {voxels / result['seconds'] / 1e6:8.2f} "
        f"Mvoxel/s  peak RSS {result['peak_bytes'] / 2**20:7.0f} MiB"
    )
    if "gpu_peak_bytes" in result:
        text += f"  GPU peak {result['gpu_peak_bytes'] / 2**20:.0f} MiB"
    if baseline is not None:
        text += f"  {baseline['seconds'] / result['seconds']:5.2f}× vigra"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both")
    parser.add_argument("--skip-vigra", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_ours(args.sizes[0], args.repeats, args.worker)))
        return
    output_mib = {size: 61 * size**3 * 4 / 2**20 for size in args.sizes}
    print(f"ilastik 3D feature set, 61 channels, float32; {args.threads} CPU threads")
    for size in args.sizes:
        print(f"-- {size}³ (output alone {output_mib[size]:.0f} MiB)")
        vigra = None if args.skip_vigra else _run_vigra(size, args.repeats, args.threads)
        if vigra is not None:
            print(_line("vigra", size, vigra, None), flush=True)
        ours = _run_ours(size, args.repeats, "cpu", args.threads)
        print(_line("ours (cpu)", size, ours, vigra), flush=True)
        if _cuda_available():
            cuda = _run_ours(size, args.repeats, "cuda", args.threads)
            print(_line("ours (cuda)", size, cuda, vigra), flush=True)


if __name__ == "__main__":
    main()
