"""Whole-volume batch throughput: our local engine vs a plain vigra pipeline.

Both predict the same synthetic volume with a 100-tree forest trained on the same
labelled voxels and the same feature selection (the project default):

* ours: ``hpc`` local engine (dask LocalCluster, 1 and then 2 worker processes with one
  thread each), blockwise with the halo, written to OME-Zarr (segmentation);
* plain: Debian's ``/usr/bin/python3`` with vigra — blockwise vigra filters (ilastik's
  scheme, ``tests/filters/vigra_worker.py``) + a vigra RandomForest trained on the same
  samples, argmax, kept in memory (no writing), one process.

Usage: ``.venv/bin/python benchmarks/batch.py [--shape 64 192 192]``. Prints Mvoxel/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "hpc"))

VIGRA_SCRIPT = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1] + "/tests/filters")
import vigra
import vigra_worker
image = np.load(sys.argv[2]).astype(np.float32)
spec = json.load(open(sys.argv[3]))
X = np.load(sys.argv[4]).astype(np.float32); y = np.load(sys.argv[5]).astype(np.uint32)
block, halo = spec["block"], spec["halo"]

def features(data):
    return np.concatenate([vigra_worker.ilastik_feature(data, f, s)
                           for f, s, _ in spec["features"]], axis=0)

start = time.perf_counter()
forest = vigra.learning.RandomForest(treeCount=100)
forest.learnRF(X, y[:, None])
train_s = time.perf_counter() - start
start = time.perf_counter()
out = np.zeros(image.shape, np.uint8)
shape = image.shape
for z0 in range(0, shape[0], block[0]):
    for y0 in range(0, shape[1], block[1]):
        for x0 in range(0, shape[2], block[2]):
            lo = [max(0, a - h) for a, h in zip((z0, y0, x0), halo)]
            hi = [min(n, a + b + h) for a, b, h, n in zip((z0, y0, x0), block, halo, shape)]
            grown = image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            f = features(grown)
            inner = tuple(slice(a - l, min(a + b, n) - l)
                          for a, l, b, n in zip((z0, y0, x0), lo, block, shape))
            f = f[(slice(None),) + inner]
            flat = np.ascontiguousarray(f.reshape(f.shape[0], -1).T)
            proba = forest.predictProbabilities(flat)
            seg = np.argmax(proba, axis=1).astype(np.uint8) + 1
            out[z0:z0 + block[0], y0:y0 + block[1], x0:x0 + block[2]] = seg.reshape(
                f.shape[1:])
print(json.dumps({"train_s": train_s, "predict_s": time.perf_counter() - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 192, 192))
    parser.add_argument("--block", type=int, nargs=3, default=(64, 64, 64))
    args = parser.parse_args()
    from conftest import make_blobs, paint_and_train, write_zarr

    from hpc.job import EngineSpec
    from hpc.service import JobService
    from ilastik_web.project import Project

    shape = tuple(args.shape)
    voxels = float(np.prod(shape))
    image, truth = make_blobs(shape, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_zarr(root / "raw.zarr", image, chunks=(32, 64, 64))
        project = Project.create(root / "project", source, classes=["background", "blob"])
        blob_slices = np.argsort((truth == 2).sum(axis=(1, 2)))[-2:]
        paint_and_train(project, truth, slices=[int(z) for z in blob_slices])
        generation = project.current_generation()
        computer, classifier = generation.computer, generation.classifier
        print(f"volume {shape} ({voxels / 1e6:.2f} Mvoxel), {computer.num_features} features, "
              f"halo {computer.halo(0)}, block {tuple(args.block)}")
        service = JobService(root / "jobs")
        results = {}
        for workers in (1, 2):
            job = service.create(classifier=classifier, computer=computer, source=source,
                                 output=root / f"seg{workers}.ome.zarr", format="ome-zarr",
                                 export="segmentation", engine=EngineSpec(workers=workers),
                                 block_shape=args.block, chunk_shape=args.block)
            start = time.perf_counter()
            service.start(job, background=False)
            seconds = time.perf_counter() - start
            assert job.state == "DONE", job.logs()
            results[workers] = seconds
            print(f"ours, {workers} dask worker(s): {seconds:.1f} s "
                  f"= {voxels / seconds / 1e6:.3f} Mvoxel/s (incl. cluster start-up)")
        print(f"speed-up 1 -> 2 workers: {results[1] / results[2]:.2f}x")

        from ilastik_web.classify.features import gather_training_samples

        X, y = gather_training_samples(computer, project.labels.snapshot())
        np.save(root / "image.npy", image)
        np.save(root / "X.npy", X)
        np.save(root / "y.npy", y)
        spec = {"block": list(args.block), "halo": list(computer.halo(0)),
                "features": [[s.feature_id, s.sigma, s.in_2d] for s in computer.selection]}
        (root / "spec.json").write_text(json.dumps(spec))
        run = subprocess.run(
            ["/usr/bin/python3", "-c", VIGRA_SCRIPT, str(REPO), str(root / "image.npy"),
             str(root / "spec.json"), str(root / "X.npy"), str(root / "y.npy")],
            capture_output=True, text=True, timeout=3600)
        if run.returncode != 0:
            print(f"vigra pipeline failed: {run.stderr.strip().splitlines()[-1:]}")
            return
        plain = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"plain vigra filters + vigra RF (1 process): {plain['predict_s']:.1f} s "
              f"= {voxels / plain['predict_s'] / 1e6:.3f} Mvoxel/s")
        print(f"ours (2 workers) vs plain: {plain['predict_s'] / results[2]:.2f}x")
        project.close()


if __name__ == "__main__":
    main()
