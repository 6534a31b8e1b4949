"""The pixel classifier: a random forest with ilastik's parameters."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from ilastik_web.errors import InvalidRequestError

log = logging.getLogger(__name__)

DEFAULT_TREES = 100
#: Labelled voxels a training uses at most (a class-balanced subsample beyond that):
#: chosen by ``benchmarks/training.py`` (time against balanced accuracy, side by side).
MAX_TRAINING_SAMPLES = 10_000
# Trees are grown in batches so a superseded training can stop between batches.
TREE_BATCH = 20


def balanced_subsample(labels: np.ndarray, max_samples: int, *, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_samples`` labels, as evenly spread over classes as they allow.

    Each class keeps ``max_samples / classes`` voxels (all of a smaller class, its unused
    share going to the others), drawn without replacement by a seeded generator, so the
    same labels always give the same training set. Returned sorted.
    """
    labels = np.asarray(labels)
    if len(labels) <= max_samples:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    left = int(max_samples)
    # Water-filling: small classes take all they have, the rest share what is left.
    for i in np.argsort(counts):
        share = left // (len(classes) - int(np.count_nonzero(quota)))
        quota[i] = min(int(counts[i]), share)
        left -= quota[i]
    picked = [rng.choice(np.flatnonzero(labels == c), int(q), replace=False)
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked))


def training_key(features: np.ndarray, labels: np.ndarray, n_trees: int,
                 random_state: int) -> str:
    """Digest of everything a forest's trees depend on (samples, labels, parameters)."""
    digest = hashlib.blake2b(digest_size=16)
    trainer = "onedal" if _onedal_forest() is not None else "sklearn"
    digest.update(f"{trainer}/{n_trees}/{random_state}/{features.shape}/{labels.dtype}".encode())
    digest.update(np.ascontiguousarray(features, dtype=np.float32).data)
    digest.update(np.ascontiguousarray(labels).data)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _onedal_forest():
    """oneDAL's forest (``scikit-learn-intelex``), or None where it does not install.
    Imported on first training only: prediction (viewer, batch workers) never needs it."""
    try:
        import daal4py
        from sklearnex.ensemble import RandomForestClassifier as OneDalForest
    except ImportError:  # pragma: no cover - a dependency; absent on some platforms
        return None
    # sklearnex's fit wrapper maps n_jobs to oneDAL's threads, but outside the main
    # thread (our trainer's) it ignores n_jobs, uses every core and warns on each fit.
    # We set oneDAL's thread count ourselves (daalinit) and call the fit it wraps.
    fit = getattr(OneDalForest.fit, "__wrapped__", OneDalForest.fit)
    return OneDalForest, fit, daal4py.daalinit


def grow_forest(features: np.ndarray, labels: np.ndarray, *, n_trees: int = DEFAULT_TREES,
                n_jobs: int = 1, random_state: int = 0,
                should_stop: Callable[[], bool] | None = None) -> RandomForestClassifier:
    """A plain scikit-learn forest of ``n_trees`` trees, √F features per split, bootstrap,
    grown to purity, in batches of :data:`TREE_BATCH` (``should_stop`` between them).

    The trees are grown by oneDAL when ``scikit-learn-intelex`` is installed (3-4x faster
    than scikit-learn's builder, ``benchmarks/training.py``; split thresholds at the
    boundaries of its 256 bins), else by scikit-learn. Either way they are handed back as
    scikit-learn trees in a scikit-learn forest: that is what is pickled, what the viewer
    and batch workers predict with (:meth:`PixelClassifier._forest_proba`), and loading it
    needs no oneDAL. Seeded: the same samples give the same trees.
    """
    classes = np.unique(labels)
    onedal = _onedal_forest()
    trees: list = []
    batch = 0
    while len(trees) < n_trees:
        if should_stop is not None and should_stop():
            raise TrainingCancelled()
        size = min(TREE_BATCH, n_trees - len(trees))
        seed = random_state * 1_000_003 + batch
        params = dict(n_estimators=size, max_features="sqrt", bootstrap=True, n_jobs=n_jobs,
                      random_state=seed)
        if onedal is not None:
            onedal_forest, fit, set_threads = onedal
            set_threads(max(1, int(n_jobs)))
            model = onedal_forest(**params)
            fit(model, features, labels)
            trees.extend(model.estimators_)
        else:
            trees.extend(RandomForestClassifier(**params).fit(features, labels).estimators_)
        batch += 1
    forest = RandomForestClassifier(n_trees, max_features="sqrt", bootstrap=True,
                                    n_jobs=n_jobs, random_state=random_state)
    forest.estimators_ = trees
    forest.estimator_ = trees[0]
    forest.classes_ = classes
    forest.n_classes_ = len(classes)
    forest.n_outputs_ = 1
    forest.n_features_in_ = int(features.shape[1])
    return forest


class TrainingCancelled(Exception):
    """Training stopped because newer labels or features superseded it."""


@dataclass
class TrainingReport:
    samples: int
    features: int
    classes: tuple[int, ...]
    seconds: float


class PixelClassifier:
    """A trained random forest mapping per-voxel features to class probabilities.

    Parameters
    ----------
    label_values
        The class values (1..255) the project has; probabilities are returned in this
        order, with zeros for classes that had no training voxels.
    feature_names
        Names of the feature channels, in the order the forest expects them.
    """

    def __init__(self, forest: RandomForestClassifier, label_values: Sequence[int],
                 feature_names: Sequence[str], report: TrainingReport):
        self.forest = forest
        self.label_values = tuple(int(v) for v in label_values)
        self.feature_names = tuple(feature_names)
        self.report = report
        trained = [int(v) for v in forest.classes_]
        self._columns = np.array(
            [trained.index(v) if v in trained else -1 for v in self.label_values]
        )

    @classmethod
    def train(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        label_values: Sequence[int],
        feature_names: Sequence[str],
        n_trees: int = DEFAULT_TREES,
        n_jobs: int | None = None,
        random_state: int = 0,
        should_stop: Callable[[], bool] | None = None,
        previous: PixelClassifier | None = None,
    ) -> PixelClassifier:
        """Fit on ``features`` (samples, channels) and ``labels`` (samples,) values >= 1.

        Uses ilastik's forest: ``n_trees`` trees, √F features per split, bootstrap,
        grown to purity (by :func:`grow_forest`). With ``previous`` (the classifier being
        replaced), a training on the very samples it was trained on keeps its trees:
        they are what a fresh training would grow.

        Raises
        ------
        InvalidRequestError
            Fewer than two classes have labels.
        TrainingCancelled
            ``should_stop`` returned True between batches of trees.
        """
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise InvalidRequestError("features must be (samples, channels), labels (samples,)")
        present = np.unique(labels)
        if len(present) < 2:
            raise InvalidRequestError("training needs labels of at least two classes")
        start = time.perf_counter()
        threads = n_jobs if n_jobs is not None else (os.cpu_count() or 1)
        key = training_key(features, labels, n_trees, random_state)
        if previous is not None and getattr(previous, "training_key", None) == key:
            # The same samples give the same trees (seeded): keep them all.
            forest = previous.forest
            forest.set_params(n_jobs=threads)
        else:
            forest = grow_forest(features, labels, n_trees=n_trees, n_jobs=threads,
                                 random_state=random_state, should_stop=should_stop)
        report = TrainingReport(
            samples=int(features.shape[0]),
            features=int(features.shape[1]),
            classes=tuple(int(v) for v in present),
            seconds=time.perf_counter() - start,
        )
        log.info("trained %d trees on %d samples x %d features in %.2f s",
                 n_trees, report.samples, report.features, report.seconds)
        classifier = cls(forest, label_values, feature_names, report)
        classifier.training_key = key
        return classifier

    @property
    def num_classes(self) -> int:
        return len(self.label_values)

    def predict_proba(self, features: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """Probabilities (classes, *spatial) float32 from features (channels, *spatial),
        on ``threads`` threads (default: the forest's ``n_jobs``). The numbers do not
        depend on the threads."""
        if features.shape[0] != len(self.feature_names):
            raise InvalidRequestError(
                f"classifier expects {len(self.feature_names)} feature channels, "
                f"got {features.shape[0]}"
            )
        spatial = features.shape[1:]
        # Trees walk one sample's features at a time: rows must be contiguous, or every
        # split reads a different cache line (the transpose of (channels, voxels) is not).
        flat = np.ascontiguousarray(features.reshape(features.shape[0], -1).T,
                                    dtype=np.float32)
        out = np.zeros((self.num_classes, flat.shape[0]), dtype=np.float32)
        if flat.shape[0]:
            proba = self._forest_proba(flat, threads).astype(np.float32, copy=False)
            for row, column in enumerate(self._columns):
                if column >= 0:
                    out[row] = proba[:, column]
        return out.reshape(self.num_classes, *spatial)

    def _forest_proba(self, samples: np.ndarray, threads: int | None = None) -> np.ndarray:
        """The forest's mean tree probabilities, as ``RandomForestClassifier.predict_proba``.

        Each sample sums its trees in the forest's order whatever the threads, so a chunk
        gets the same numbers in the viewer (one thread) and in a batch job (several).
        No joblib: the caller's thread (a worker of the server's pool) does the work, and
        ``threads`` (default ``forest.n_jobs``) split the samples only when more than one
        is asked for: a server's workers each predict a chunk on their own thread.
        """
        trees = self.forest.estimators_
        threads = int(threads if threads is not None else (self.forest.n_jobs or 1))
        if threads < 0:
            threads = os.cpu_count() or 1
        threads = max(1, min(threads, samples.shape[0] // 4096))

        def mean(part: np.ndarray) -> np.ndarray:
            total = np.zeros((part.shape[0], len(self.forest.classes_)), dtype=np.float64)
            for tree in trees:
                total += tree.predict_proba(part, check_input=False)
            total /= len(trees)
            return total

        if threads == 1:
            return mean(samples)
        parts = np.array_split(samples, threads)
        with ThreadPoolExecutor(threads, thread_name_prefix="forest") as pool:
            return np.concatenate(list(pool.map(mean, parts)))

    def feature_importances(self) -> dict[str, float]:
        """Mean decrease in impurity per feature channel, summing to 1."""
        return {
            name: float(v)
            for name, v in zip(self.feature_names, self.forest.feature_importances_, strict=True)
        }

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename). Only files we wrote are ever loaded."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> PixelClassifier:
        with open(path, "rb") as f:
            classifier = pickle.load(f)  # noqa: S301 - written by save() in our project folder
        if not isinstance(classifier, PixelClassifier):
            raise InvalidRequestError(f"{path} does not hold a classifier")
        return classifier


def probabilities_to_uint8(proba: np.ndarray) -> np.ndarray:
    """Scale [0, 1] probabilities to uint8 0..255 (rounded)."""
    return np.clip(np.rint(proba * 255.0), 0, 255).astype(np.uint8)


def segmentation_from_probabilities(proba: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Simple segmentation: the class value of the most probable class, (1, *spatial) uint8."""
    values = np.asarray(label_values, dtype=np.uint8)
    return values[np.argmax(proba, axis=0)][None]


def uncertainty_from_probabilities(proba: np.ndarray) -> np.ndarray:
    """ilastik's uncertainty 1 − (p1 − p2) of the two most probable classes, (1, *spatial)."""
    if proba.shape[0] < 2:
        return np.zeros((1, *proba.shape[1:]), dtype=np.float32)
    top2 = np.partition(proba, proba.shape[0] - 2, axis=0)[-2:]
    return (1.0 - (top2[1] - top2[0]))[None].astype(np.float32)
