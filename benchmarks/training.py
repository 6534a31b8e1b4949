"""Training options side by side: time to retrain on many labelled voxels, and accuracy.

On the demo volume, ``--voxels`` labelled voxels are drawn from the ground truth of the
painted slices of ``tests/classify/test_demo_session.py`` (features from the project's
default selection). Each option trains on them with ``--threads`` threads and is scored
by balanced accuracy (mean recall over classes) on boxes at least 12 slices from every
training slice, the same boxes the demo-session test uses. Options:

- ``today``: plain scikit-learn, ilastik's forest (100 trees, sqrt features per split,
  bootstrap, grown to purity) on every labelled voxel: the peer every ratio is against;
- ``sklearn balanced-N``: the same forest on a class-balanced subsample of at most N
  voxels (what :func:`ilastik_web.classify.forest.balanced_subsample` draws);
- ``sklearn ... mf-K / leaf-K / depth-D``: features per split, leaf-size or depth limits
  on the 10k subsample;
- ``ours balanced-N``: :func:`ilastik_web.classify.forest.grow_forest` (oneDAL's tree
  builder from scikit-learn-intelex when installed, trees handed back as scikit-learn's);
- ``incremental``: the labels grew from 75 % to all voxels; the previous forest keeps 75
  of its trees, 25 are grown on the new subsample (warm start); and the same samples
  again, where :meth:`PixelClassifier.train` keeps every tree;
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
from ilastik_web.classify.forest import (
    MAX_TRAINING_SAMPLES,
    PixelClassifier,
    balanced_subsample,
    grow_forest,
)
from ilastik_web.demo import ensure_demo
from ilastik_web.project import DEFAULT_SELECTION
from ilastik_web.sources import open_source

PAINTED = (24, 64, 104)
EVALUATED_Z = ((40, 48), (84, 92))


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    classes = np.unique(truth)
    return float(np.mean([(predicted[truth == c] == c).mean() for c in classes]))


def forest(threads: int, **kwargs) -> RandomForestClassifier:
    params = {"max_features": "sqrt", "bootstrap": True, "random_state": 0, **kwargs}
    return RandomForestClassifier(100, n_jobs=threads, **params)


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
        print(f"   {name:22s} train {seconds:6.2f} s = {today_s[0] / seconds:7.1f}x faster "
              f"than plain scikit-learn   balanced accuracy {score:.4f}", flush=True)

    today_s = [1.0]

    def timed(fit):
        start = time.perf_counter()
        model = fit()
        return model, time.perf_counter() - start

    model, today = timed(lambda: forest(args.threads).fit(X, y))
    today_s[0] = today
    report("today", today, model.predict)

    def subsample(cap: int, labels: np.ndarray = y) -> np.ndarray:
        return balanced_subsample(labels, cap, seed=0)

    keep = subsample(MAX_TRAINING_SAMPLES)
    Xs, ys = X[keep], y[keep]
    for cap in (5_000, 10_000, 20_000):
        k = subsample(cap)
        m, s = timed(lambda k=k: forest(args.threads).fit(X[k], y[k]))
        report(f"sklearn balanced-{cap // 1000}k", s, m.predict)
    for name, kwargs in (("mf-2", {"max_features": 2}), ("mf-8", {"max_features": 8}),
                         ("leaf-5", {"min_samples_leaf": 5}), ("depth-12", {"max_depth": 12})):
        m, s = timed(lambda kwargs=kwargs: forest(args.threads, **kwargs).fit(Xs, ys))
        report(f"sklearn 10k {name}", s, m.predict)
    grow_forest(Xs[:200], ys[:200], n_trees=2)  # imports the tree builder untimed
    for cap in (5_000, 10_000, 20_000):
        k = subsample(cap)
        m, s = timed(lambda k=k: grow_forest(X[k], y[k], n_jobs=args.threads))
        report(f"ours balanced-{cap // 1000}k", s, m.predict)
    # Labels grow from 75 % of the voxels to all of them: keep 75 trees, grow 25.
    older = np.arange(len(y)) < len(y) * 3 // 4
    k_old = np.flatnonzero(older)[subsample(MAX_TRAINING_SAMPLES, y[older])]
    previous = grow_forest(X[k_old], y[k_old], n_trees=75, n_jobs=args.threads)
    m, s = timed(lambda: grow_forest(Xs, ys, n_trees=25, n_jobs=args.threads, random_state=1))
    previous.estimators_ += m.estimators_
    report("incremental 75+25", s, previous.predict)
    names = [f"f{i}" for i in range(X.shape[1])]
    labels = sorted(counts)
    first = PixelClassifier.train(Xs, ys, label_values=labels, feature_names=names,
                                  n_jobs=args.threads)
    m, s = timed(lambda: PixelClassifier.train(Xs, ys, label_values=labels, feature_names=names,
                                               n_jobs=args.threads, previous=first))
    assert m.forest is first.forest
    report("incremental same", s, m.forest.predict)
    try:
        import lightgbm
    except ImportError:
        print("   lightgbm           not installed")
    else:
        m, s = timed(lambda: lightgbm.LGBMClassifier(
            n_estimators=100, num_leaves=63, n_jobs=args.threads, verbose=-1,
            random_state=0).fit(X, y))
        report("lightgbm", s, m.predict)
    print(f"kept: ours balanced-{MAX_TRAINING_SAMPLES // 1000}k")


if __name__ == "__main__":
    main()
