"""Pixel classification across the items of a collection.

An annotated item is a fully segmented image (what the training-set export assumes too):
voxels of an object belong to that object's semantic class, all other voxels to
``background``. The training samples are gathered from every annotated item — ilastik's
features of each item, a class-balanced, seeded subsample per item so that a large item
does not drown the others — and one forest is trained on all of them; it then predicts any
item, annotated or not, through that item's own feature computer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.classify.features import FeatureComputer
from ilastik_web.classify.forest import MAX_TRAINING_SAMPLES, PixelClassifier, balanced_subsample
from ilastik_web.classify.prediction import prediction_pyramids
from ilastik_web.collections.collection import Collection
from ilastik_web.errors import InvalidRequestError

#: The class of every voxel outside the objects of an annotated item.
BACKGROUND = "background"
#: Value of the background class; object classes follow in name order.
BACKGROUND_VALUE = 1


@dataclass(frozen=True)
class CollectionClassifier:
    """A forest trained on the annotated items of a collection.

    Attributes
    ----------
    classifier
        The forest (class values 1, 2, ...).
    class_names
        Class value -> name (``background`` first).
    items
        The items it was trained on, with their sample counts.
    generation
        Counts trainings of the collection; part of the served prediction's keys.
    """

    classifier: PixelClassifier
    selection: tuple
    class_names: dict[int, str]
    items: dict[str, int] = field(default_factory=dict)
    generation: int = 1

    def computer(self, volume: MultiscaleVolume, cache: ArrayCache) -> FeatureComputer:
        computer = FeatureComputer(volume, self.selection, cache)
        if tuple(computer.channel_names) != tuple(self.classifier.feature_names):
            raise InvalidRequestError("this item's channels differ from the items the "
                                      "classifier was trained on")
        return computer

    def pyramids(self, volume: MultiscaleVolume, cache: ArrayCache
                 ) -> dict[str, MultiscaleVolume]:
        """The served prediction pyramids of one item (probabilities, segmentation, ...)."""
        return prediction_pyramids(self.classifier, self.computer(volume, cache),
                                   self.generation, cache)

    def predict(self, volume: MultiscaleVolume, cache: ArrayCache) -> np.ndarray:
        """float32 probabilities (classes, z, y, x) of a whole item at full resolution."""
        computer = self.computer(volume, cache)
        return self.classifier.predict_proba(
            computer.features(0, Box.from_shape(volume.base.shape)))

    def to_json(self) -> dict:
        return {"generation": self.generation,
                "classes": [{"value": v, "name": n} for v, n in sorted(self.class_names.items())],
                "items": self.items,
                "samples": self.classifier.report.samples if self.classifier.report else None}


def class_values(collection: Collection, item_ids: Sequence[str]) -> dict[str, int]:
    """Class name -> value: background, then the items' object classes by name."""
    names = set()
    for item_id in item_ids:
        names.update(collection.annotations.metadata(item_id)["classes"].values())
    names.discard(BACKGROUND)
    return {BACKGROUND: BACKGROUND_VALUE,
            **{name: BACKGROUND_VALUE + 1 + i for i, name in enumerate(sorted(names))}}


def item_samples(collection: Collection, item_id: str, computer: FeatureComputer,
                 values: dict[str, int], max_samples: int, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(features (samples, channels), class values (samples,)) of one annotated item."""
    annotation = collection.annotations.load(item_id)
    labels = annotation.labels
    if labels.shape != tuple(computer.source.base.shape):
        raise InvalidRequestError(f"item {item_id!r}: the image changed shape since it was "
                                  "annotated")
    lookup = np.full(int(labels.max()) + 1, BACKGROUND_VALUE, dtype=np.uint8)
    for object_id, name in annotation.classes.items():
        if object_id < len(lookup):
            lookup[object_id] = values.get(name, BACKGROUND_VALUE)
    y = lookup[labels].ravel()
    keep = balanced_subsample(y, max_samples, seed=seed)
    features = computer.features(0, Box.from_shape(labels.shape))
    X = features.reshape(features.shape[0], -1)[:, keep].T
    return np.ascontiguousarray(X), y[keep]


def train_across_items(collection: Collection, selection, cache: ArrayCache, *,
                       generation: int = 1,
                       max_samples: int = MAX_TRAINING_SAMPLES,
                       should_stop: Callable[[], bool] | None = None,
                       report: Callable[[float, str], None] | None = None,
                       ) -> CollectionClassifier:
    """Train one forest on every annotated item of ``collection``.

    Parameters
    ----------
    selection
        The feature selection (as for :class:`FeatureComputer`).
    max_samples
        Samples in all; each item contributes an equal share.

    Raises
    ------
    InvalidRequestError
        No item is annotated, the items' channels differ, or only one class is present.
    """
    annotated = [item.item_id for item in collection.items
                 if collection.annotations.exists(item.item_id)]
    if not annotated:
        raise InvalidRequestError("no item of the collection is annotated yet")
    values = class_values(collection, annotated)
    per_item = max(1, max_samples // len(annotated))
    parts, names, counts = [], None, {}
    for n, item_id in enumerate(annotated):
        if should_stop is not None and should_stop():
            raise InvalidRequestError("training was cancelled")
        if report is not None:
            report(0.8 * n / len(annotated), f"features of {item_id}")
        computer = FeatureComputer(collection.open(item_id), selection, cache)
        if names is None:
            names = tuple(computer.channel_names)
        elif tuple(computer.channel_names) != names:
            raise InvalidRequestError(f"item {item_id!r} has other channels than "
                                      f"{annotated[0]!r}")
        X, y = item_samples(collection, item_id, computer, values, per_item, seed=n)
        parts.append((X, y))
        counts[item_id] = len(y)
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    if report is not None:
        report(0.8, f"training on {len(y)} samples of {len(annotated)} items")
    classifier = PixelClassifier.train(X, y, label_values=sorted(values.values()),
                                       feature_names=names, should_stop=should_stop)
    normalized = FeatureComputer(collection.open(annotated[0]), selection, cache).selection
    return CollectionClassifier(classifier, normalized,
                                {v: k for k, v in values.items()}, counts, generation)
