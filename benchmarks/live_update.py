"""Live-update benchmark: stroke → updated prediction of a 512×512 view, on the demo volume.

Measures, in one run on this machine:

1. Stroke-to-view latency: from a new stroke until (a) the first updated prediction chunk
   and (b) the whole 512×512 xy cross-section of the new classifier generation, with
   features cold (caches dropped) and warm (features of the labelled blocks and the view
   cached), through the same Project API the server uses.
2. Training time against the number of labelled voxels.
3. Prediction throughput (Mvoxel/s) on the same features: ours against plain
   scikit-learn and against vigra's random forest (Debian python3-vigra, run with
   /usr/bin/python3 in a subprocess), each with 100 trees and all cores.

Run: ``.venv/bin/python benchmarks/live_update.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from ilastik_web.abc import Box
from ilastik_web.classify.forest import PixelClassifier
from ilastik_web.classify.simulated_annotator import scribbles
from ilastik_web.demo import ensure_demo
from ilastik_web.labels import Stroke
from ilastik_web.project import Project
from ilastik_web.sources import open_source

VIEW_CHUNK = (1, 256, 256)  # what the viewer asks for in an xy panel, per chunk

VIGRA_RF = r"""
import sys, time, numpy as np, vigra
d = sys.argv[1]
X = np.load(d + "/X.npy"); y = np.load(d + "/y.npy").astype(np.uint32)[:, None]
F = np.load(d + "/F.npy")
rf = vigra.learning.RandomForest(treeCount=100)
t = time.perf_counter(); rf.learnRF(X, y); train = time.perf_counter() - t
rf.predictProbabilities(F[:1000])
t = time.perf_counter(); rf.predictProbabilities(F); pred = time.perf_counter() - t
print(train, pred)
"""


def view_chunks(z: int, shape: tuple[int, int, int]) -> list[Box]:
    view = Box((z, 0, 0), (z + 1, min(512, shape[1]), min(512, shape[2])))
    return list(view.chunks(VIEW_CHUNK))


def read_view(project: Project, chunks: list[Box]) -> tuple[float, float]:
    """Seconds to the first chunk and to the whole view, reading the served volume."""
    volume = project.current_generation().pyramids["probabilities"].levels[0]
    start = time.perf_counter()
    first = None
    for chunk in chunks:
        volume.read(chunk)
        if first is None:
            first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def stroke_to_view(project: Project, stroke: Stroke, chunks: list[Box]) -> tuple[float, float]:
    start = time.perf_counter()
    before = project.generation
    project.paint(stroke)
    project.wait_for_training(timeout=600)
    assert project.generation > before
    trained = time.perf_counter() - start
    first, whole = read_view(project, chunks)
    return trained + first, trained + whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed strokes per setting")
    parser.add_argument("--sections", default="1,2,3",
                        help="which measurements to run (1: stroke to view, 2: training "
                             "sweep, 3: prediction throughput), comma-separated")
    parser.add_argument("--no-vigra", action="store_true",
                        help="skip vigra's forest in the prediction comparison")
    args = parser.parse_args()
    sections = {int(v) for v in args.sections.split(",")}

    demo = ensure_demo()
    source = open_source(str(demo.raw_path))
    truth_volume = open_source(str(demo.labels_path)).base
    truth = truth_volume.read(truth_volume.bounds)[0]
    shape = source.base.shape
    print(f"demo volume {shape} (z, y, x) {source.base.dtype}; {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        names = [demo.class_names[v] for v in sorted(demo.class_names)]
        project = Project.create(Path(tmp) / "p", source, classes=names,
                                 live=True, debounce_s=0.0)
        slices = [shape[0] // 4, shape[0] // 2, 3 * shape[0] // 4]
        for stroke in scribbles(truth, slices=slices, strokes_per_class=2, rng=0):
            project.labels.paint(stroke)  # no training per stroke while setting up
        project.train()
        z = shape[0] // 2
        chunks = view_chunks(z, shape)
        extra = scribbles(truth, slices=[z + 1], strokes_per_class=1, rng=1)

        # 1. Stroke-to-view, cold then warm.
        print("\n1. stroke -> updated prediction of a 512x512 xy view "
              f"({len(chunks)} chunks of {VIEW_CHUNK[1]}x{VIEW_CHUNK[2]})")
        for setting in ("cold", "warm") if 1 in sections else ():
            firsts, wholes = [], []
            for i in range(args.repeats):
                if setting == "cold":
                    project.feature_cache.clear()
                    project.prediction_cache.clear()
                else:
                    read_view(project, chunks)  # features of the view are cached now
                first, whole = stroke_to_view(project, extra[i % len(extra)], chunks)
                firsts.append(first)
                wholes.append(whole)
            print(f"   {setting:4s}: first chunk {np.median(firsts):6.3f} s, "
                  f"whole view {np.median(wholes):6.3f} s (median of {args.repeats})")

        # 2. Training time against labelled voxels: rows sampled from a densely labelled
        # block (ground truth as labels), so the sweep can go beyond what was painted.
        print("\n2. training time (100 trees, all cores) against labelled voxels")
        gen = project.current_generation()
        dense_box = Box((z - 4, 0, 0), (z + 4, min(256, shape[1]), min(256, shape[2])))
        dense = gen.computer.features(0, dense_box)
        X = np.ascontiguousarray(dense.reshape(dense.shape[0], -1).T)
        y = truth[dense_box.slices].ravel()
        rng = np.random.default_rng(0)
        pick = rng.choice(len(y), min(20_000, len(y)), replace=False)
        for n in (1_000, 5_000, 20_000, 80_000) if 2 in sections else ():
            pick = rng.choice(len(y), min(n, len(y)), replace=False)
            start = time.perf_counter()
            RandomForestClassifier(100, max_features="sqrt", n_jobs=-1, random_state=0).fit(
                X[pick], y[pick])
            print(f"   {n:7d} voxels x {X.shape[1]} features: {time.perf_counter() - start:6.2f} s")
        X, y = X[pick[:20_000]], y[pick[:20_000]]

        # 3. Prediction throughput on the same features, every forest trained on the same
        # 20k samples (tree depth, hence speed, depends on the training data).
        block = Box((z - 8, 0, 0), (z + 8, min(256, shape[1]), min(256, shape[2])))
        features = gen.computer.features(0, block)
        n_vox = block.size
        flat = np.ascontiguousarray(features.reshape(features.shape[0], -1).T)
        classifier = PixelClassifier.train(X, y, label_values=sorted(demo.class_names),
                                           feature_names=gen.computer.channel_names)
        start = time.perf_counter()
        classifier.predict_proba(features)
        ours = time.perf_counter() - start
        sk = RandomForestClassifier(100, max_features="sqrt", n_jobs=-1, random_state=0)
        sk.fit(X, y)
        start = time.perf_counter()
        sk.predict_proba(flat)
        plain = time.perf_counter() - start
        print(f"\n3. prediction throughput on {n_vox / 1e6:.2f} Mvoxel x {flat.shape[1]} features")
        print(f"   ours (PixelClassifier)   : {n_vox / ours / 1e6:6.2f} Mvoxel/s")
        print(f"   plain scikit-learn       : {n_vox / plain / 1e6:6.2f} Mvoxel/s"
              f"   ratio ours/sklearn = {plain / ours:.2f}")
        with tempfile.TemporaryDirectory() as d:
            np.save(f"{d}/X.npy", X.astype(np.float32))
            np.save(f"{d}/y.npy", y)
            np.save(f"{d}/F.npy", flat)
            try:
                if args.no_vigra:
                    raise OSError("skipped (--no-vigra)")
                out = subprocess.run(["/usr/bin/python3", "-c", VIGRA_RF, d], check=True,
                                     capture_output=True, text=True, timeout=1800).stdout
                vigra_train, vigra_pred = (float(v) for v in out.split())
                print(f"   vigra RandomForest       : {n_vox / vigra_pred / 1e6:6.2f} Mvoxel/s"
                      f"   ratio ours/vigra = {vigra_pred / ours:.2f}"
                      f"   (vigra trains in {vigra_train:.2f} s)")
            except (OSError, subprocess.SubprocessError) as exc:
                print(f"   vigra RandomForest       : unavailable ({exc})")
        print(json.dumps({"labelled_voxels": int(len(y)), "features": int(X.shape[1])}))
        project.close()


if __name__ == "__main__":
    sys.exit(main())
