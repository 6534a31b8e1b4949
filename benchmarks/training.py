"""Training options side by side: time to retrain on many labelled voxels, and accuracy.

On the demo volume, ``--voxels`` labelled voxels are drawn from the ground truth of the
painted slices of ``tests/classify/test_demo_session.py`` (features from the project's
default selection). Each option trains on them with ``--threads`` threads and is scored
by balanced accuracy (mean recall over classes) on boxes at least 12 slices from every
training slice, the same boxes the demo-session test uses. Options:

- ``today``: ilastik's forest, 100 trees grown to purity on every labelled voxel;
- ``balanced-N``: the same forest on a class-balanced subsample of at most N voxels
  (what :func:`ilastik_web.classify.forest.balanced_subsample` draws);
- ``leaf-K`` / ``depth-D``: leaf-size or depth limits on every voxel;
- ``incremental-25%``: a quarter of the trees regrown on the new labels (the rest kept);
- ``lightgbm``: gradient-boosted trees from PyPI, when installed.

Run: ``.venv/bin/python -m benchmarks.training [--voxels 80000] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from ilastik_web.abc import Box
from ilastik_web.argtypes import positive
from ilastik_web.cache import ArrayCache
from ilastik_web.classify.features import FeatureComputer
from ilastik_web.classify.forest import balanced_subsample
from ilastik_web.demo import ensure_demo
from ilastik_web.project import DEFAULT_SELECTION
from ilastik_web.sources import open_source

PAINTED = (24, 64, 104)
EVALUATED_Z = ((40, 48), (84, 92))


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    classes = np.unique(truth)
    return float(np.mean([(predicted[truth == c] == c).mean() for c in classes]))


def forest(threads: int, **kwargs) -> RandomForestClassifier:
    return RandomForestClassifier(100, max_features="sqrt", bootstrap=True, n_jobs=threads,
                                  random_state=0, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=positive(int), default=80_000,
                        help="labelled voxels to train on")
    parser.add_argument("--threads", type=positive(int), default=2, help="training threads")
    args = parser.parse_args()

    demo = ensure_demo()
    source = open_source(str(demo.raw_path))
    truth_volume = open_source(str(demo.labels_path)).base
    truth = truth_volume.read(truth_volume.bounds)[0]
    computer = FeatureComputer(source, DEFAULT_SELECTION, ArrayCache(0))
    shape = source.base.shape
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for z in PAINTED:
        plane = Box((z, 0, 0), (z + 1, shape[1], shape[2]))
        feats = computer.features(0, plane)
        xs.append(feats.reshape(feats.shape[0], -1).T)
        ys.append(truth[plane.slices].ravel())
    X_all, y_all = np.concatenate(xs), np.concatenate(ys)
    pick = rng.choice(len(y_all), min(args.voxels, len(y_all)), replace=False)
    X, y = np.ascontiguousarray(X_all[pick]), y_all[pick]
    test_x, test_y = [], []
    for z0, z1 in EVALUATED_Z:
        for y0, x0 in ((0, 0), (192, 320), (384, 128)):
            box = Box((z0, y0, x0), (z1, y0 + 128, x0 + 128))
            feats = computer.features(0, box)
            test_x.append(feats.reshape(feats.shape[0], -1).T)
            test_y.append(truth[box.slices].ravel())
    TX, TY = np.ascontiguousarray(np.concatenate(test_x)), np.concatenate(test_y)
    counts = {int(v): int(n) for v, n in zip(*np.unique(y, return_counts=True), strict=True)}
    print(f"{len(y)} labelled voxels x {X.shape[1]} features {counts}; "
          f"{len(TY)} test voxels; {args.threads} threads")

    def report(name: str, seconds: float, predict) -> None:
        score = balanced_accuracy(predict(TX), TY)
        print(f"   {name:18s} train {seconds:6.2f} s   balanced accuracy {score:.4f}")

    def timed(fit):
        start = time.perf_counter()
        model = fit()
        return model, time.perf_counter() - start

    model, s = timed(lambda: forest(args.threads).fit(X, y))
    report("today", s, model.predict)
    for cap in (10_000, 20_000, 40_000):
        keep = balanced_subsample(y, cap, seed=0)
        m, s = timed(lambda keep=keep: forest(args.threads).fit(X[keep], y[keep]))
        report(f"balanced-{cap // 1000}k", s, m.predict)
    for leaf in (5, 20):
        m, s = timed(lambda leaf=leaf: forest(args.threads, min_samples_leaf=leaf).fit(X, y))
        report(f"leaf-{leaf}", s, m.predict)
    m, s = timed(lambda: forest(args.threads, max_depth=12).fit(X, y))
    report("depth-12", s, m.predict)
    # Incremental: keep 75 trees of the previous forest, regrow 25 on the new labels.
    previous = forest(args.threads, warm_start=True).set_params(n_estimators=75).fit(X, y)
    start = time.perf_counter()
    previous.set_params(n_estimators=100).fit(X, y)
    report("incremental-25%", time.perf_counter() - start, previous.predict)
    try:
        import lightgbm
    except ImportError:
        print("   lightgbm           not installed")
    else:
        m, s = timed(lambda: lightgbm.LGBMClassifier(
            n_estimators=100, num_leaves=63, n_jobs=args.threads, verbose=-1,
            random_state=0).fit(X, y))
        report("lightgbm", s, m.predict)


if __name__ == "__main__":
    main()
