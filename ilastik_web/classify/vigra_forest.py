"""ilastik's trained forests, decoded from vigra's RF HDF5 format without vigra.

Desktop ilastik stores its classifier as vigra random forests
(``ClassifierForests/ForestNNNN/Tree_NN/{topology,parameters}``). The format:

- ``topology`` (int32): ``[feature_count, class_count, node, node, ...]``; a split node is
  ``[0, parameter_address, child_left, child_right, column]`` and goes left iff
  ``x[column] < parameters[parameter_address + 1]``; a leaf is
  ``[0x40000000, parameter_address]`` with ``parameters[parameter_address]`` its weight and
  the next ``class_count`` parameters its class distribution. Children are offsets into
  ``topology``.
- a forest predicts the mean of its trees' leaf distributions (``predict_weighted_`` is 0 in
  every file ilastik writes); ilastik's parallel classifier averages its forests weighted by
  their tree counts, which is the mean over all trees.

:class:`VigraForestClassifier` plugs such a forest into the prediction path in place of a
:class:`~ilastik_web.classify.forest.PixelClassifier`, until the user retrains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from ilastik_web.classify.forest import PixelClassifier, TrainingReport
from ilastik_web.errors import InvalidRequestError

SPLIT_NODE = 0
LEAF_NODE = 0x40000000


class VigraForestError(InvalidRequestError):
    """A stored forest is not in the vigra RF format we decode."""


def _decode_tree(
    topology: np.ndarray, parameters: np.ndarray, class_count: int, base: int, leaf_base: int
) -> tuple[list, list, list, list, list]:
    """Nodes of one tree as flat lists; node ``i`` of the result is ``base + i`` overall."""
    index_of: dict[int, int] = {}
    offsets = []
    position = 2
    while position < len(topology):
        kind = int(topology[position])
        index_of[position] = len(offsets)
        offsets.append(position)
        if kind == SPLIT_NODE:
            position += 5
        elif kind == LEAF_NODE:
            position += 2
        else:
            raise VigraForestError(f"unsupported vigra RF node type {kind:#x} at {position}")
    feature, threshold, left, right, leaves = [], [], [], [], []
    for position in offsets:
        kind = int(topology[position])
        address = int(topology[position + 1])
        if kind == SPLIT_NODE:
            try:
                children = [index_of[int(topology[position + k])] for k in (2, 3)]
            except KeyError:
                raise VigraForestError(f"vigra RF split at {position} points nowhere") from None
            feature.append(int(topology[position + 4]))
            threshold.append(float(parameters[address + 1]))
            left.append(base + children[0])
            right.append(base + children[1])
        else:
            distribution = np.asarray(parameters[address + 1 : address + 1 + class_count])
            if distribution.shape != (class_count,):
                raise VigraForestError(f"vigra RF leaf at {position} is truncated")
            total = float(distribution.sum())
            feature.append(-1)
            threshold.append(0.0)
            left.append(leaf_base + len(leaves))
            right.append(-1)
            leaves.append(distribution / total if total > 0 else distribution)
    return feature, threshold, left, right, leaves


class VigraForest:
    """Every tree of one or more vigra forests, flattened for fast evaluation.

    Parameters
    ----------
    trees
        ``(topology, parameters, labels)`` per tree, ``labels`` the class values of the
        tree's distribution entries (its forest's ``_ext_param/labels``).
    feature_count
        Number of feature columns the forest was trained on.
    """

    def __init__(self, trees: Sequence[tuple[np.ndarray, np.ndarray, Sequence[int]]],
                 feature_count: int):
        if not trees:
            raise VigraForestError("the classifier holds no trees")
        self.feature_count = int(feature_count)
        labels: list[int] = sorted({int(v) for _, _, tree_labels in trees for v in tree_labels})
        self.labels = tuple(labels)
        feature, threshold, left, right, leaves, roots = [], [], [], [], [], []
        for topology, parameters, tree_labels in trees:
            topology = np.asarray(topology, dtype=np.int64)
            if len(topology) < 3 or int(topology[0]) != self.feature_count:
                raise VigraForestError(
                    f"a tree expects {topology[0] if len(topology) else '?'} features, "
                    f"the forest {self.feature_count}"
                )
            class_count = int(topology[1])
            if class_count != len(tree_labels):
                raise VigraForestError(
                    f"a tree has {class_count} classes but its forest names {len(tree_labels)}"
                )
            roots.append(len(feature))
            f, t, lo, hi, dist = _decode_tree(
                topology, np.asarray(parameters, dtype=np.float64), class_count,
                len(feature), len(leaves),
            )
            columns = [labels.index(int(v)) for v in tree_labels]
            for d in dist:
                row = np.zeros(len(labels))
                row[columns] = d
                leaves.append(row)
            feature += f
            threshold += t
            left += lo
            right += hi
        if max(feature) >= self.feature_count:
            raise VigraForestError("a split uses a feature column beyond the feature count")
        self.roots = np.asarray(roots, dtype=np.int64)
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.left = np.asarray(left, dtype=np.int64)
        self.right = np.asarray(right, dtype=np.int64)
        self.leaf_values = np.asarray(leaves, dtype=np.float64)

    @property
    def tree_count(self) -> int:
        return len(self.roots)

    @classmethod
    def from_hdf5(cls, forest_groups: Sequence) -> VigraForest:
        """Decode ``ForestNNNN`` groups (h5py groups, or mappings of the same layout)."""
        trees = []
        feature_count = None
        for group in forest_groups:
            try:
                labels = [int(v) for v in np.ravel(group["_ext_param"]["labels"][()])]
                names = sorted(k for k in group.keys() if k.startswith("Tree_"))
                for name in names:
                    topology = np.asarray(group[name]["topology"][()])
                    parameters = np.asarray(group[name]["parameters"][()])
                    trees.append((topology, parameters, labels))
                    feature_count = int(topology[0]) if feature_count is None else feature_count
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise VigraForestError(f"not a vigra random forest: {exc}") from None
        if feature_count is None:
            raise VigraForestError("the classifier holds no trees")
        return cls(trees, feature_count)

    def predict_proba(self, samples: np.ndarray) -> np.ndarray:
        """Mean leaf distribution over all trees, (samples, classes) float32, classes in
        :attr:`labels` order."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if samples.ndim != 2 or samples.shape[1] != self.feature_count:
            raise InvalidRequestError(
                f"the forest expects (samples, {self.feature_count}) features, "
                f"got {samples.shape}"
            )
        out = np.zeros((samples.shape[0], len(self.labels)), dtype=np.float64)
        if samples.shape[0]:
            _predict(samples, self.roots, self.feature, self.threshold, self.left,
                     self.right, self.leaf_values, out)
        return out.astype(np.float32)

    def set_params(self, **params) -> None:
        """Accept sklearn's ``n_jobs`` knob (prediction uses numba's threads)."""
        unknown = set(params) - {"n_jobs"}
        if unknown:
            raise TypeError(f"unsupported parameters {sorted(unknown)}")

    def split_counts(self) -> np.ndarray:
        """How often each feature column is split on."""
        used = self.feature[self.feature >= 0]
        return np.bincount(used, minlength=self.feature_count)


@numba.njit(parallel=True, nogil=True, cache=True)
def _predict(samples, roots, feature, threshold, left, right, leaf_values, out):  # pragma: no cover
    n_trees = roots.shape[0]
    n_classes = leaf_values.shape[1]
    for i in numba.prange(samples.shape[0]):
        row = samples[i]
        for t in range(n_trees):
            node = roots[t]
            while feature[node] >= 0:
                if np.float64(row[feature[node]]) < threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            leaf = left[node]
            for c in range(n_classes):
                out[i, c] += leaf_values[leaf, c]
        for c in range(n_classes):
            out[i, c] /= n_trees


class VigraForestClassifier(PixelClassifier):
    """A forest desktop ilastik trained, behind the :class:`PixelClassifier` interface.

    Parameters
    ----------
    forest
        The decoded forest.
    label_values
        The project's class values; probabilities come in this order (zeros for a class
        the forest does not know).
    feature_names
        The project's feature channel names, in the order :meth:`predict_proba` receives
        them (``filters.channel_names`` of the selection).
    columns
        For each forest column, the index of the feature channel it reads: ilastik orders
        its columns by its own selection matrix, which need not be ours.
    """

    def __init__(self, forest: VigraForest, label_values: Sequence[int],
                 feature_names: Sequence[str], columns: Sequence[int]):
        # No sklearn estimator behind this one, so PixelClassifier.__init__ does not apply.
        self.forest = forest
        self.label_values = tuple(int(v) for v in label_values)
        self.feature_names = tuple(feature_names)
        self.columns = np.asarray(columns, dtype=np.int64)
        if len(self.columns) != forest.feature_count:
            raise VigraForestError(
                f"the forest reads {forest.feature_count} features, {len(self.columns)} mapped"
            )
        if len(self.columns) and (self.columns.min() < 0
                                  or self.columns.max() >= len(self.feature_names)):
            raise VigraForestError("a forest column maps outside the feature channels")
        self.report = TrainingReport(samples=0, features=len(self.feature_names),
                                     classes=forest.labels, seconds=0.0)
        self._columns = np.array(
            [forest.labels.index(v) if v in forest.labels else -1 for v in self.label_values]
        )

    def _forest_proba(self, samples: np.ndarray, threads: int | None = None) -> np.ndarray:
        """ilastik's forest on the feature channels it was trained on, in its order (the
        checks, flattening and class columns are :class:`PixelClassifier`'s), on the
        calling thread's numba threads (``threads`` is not used)."""
        return self.forest.predict_proba(np.ascontiguousarray(samples[:, self.columns]))

    def feature_importances(self) -> dict[str, float]:
        """Share of the forest's splits on each feature channel (ilastik stores no
        impurity decrease), summing to 1."""
        counts = np.zeros(len(self.feature_names))
        np.add.at(counts, self.columns, self.forest.split_counts())
        total = counts.sum() or 1.0
        return {name: float(c / total) for name, c in zip(self.feature_names, counts, strict=True)}
