"""Pixel classification trained across the annotated items of a collection."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from ilastik_web.cache import ArrayCache
from ilastik_web.collections import Collection
from ilastik_web.collections.pixel import BACKGROUND, train_across_items
from ilastik_web.errors import InvalidRequestError

SELECTION = (("GaussianSmoothing", 0.7), ("GaussianGradientMagnitude", 1.0))


def _image(seed, shape=(32, 32)):
    """Bright squares (cells) on a dark noisy background; and where they are."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 5, shape)
    cells = np.zeros(shape, bool)
    for _ in range(4):
        y, x = rng.integers(2, shape[0] - 8, 2)
        cells[y:y + 6, x:x + 6] = True
    image[cells] = 200
    return np.clip(image, 0, 255).astype(np.uint8), cells


@pytest.fixture
def collection(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    truths = {}
    for n, name in enumerate(("a", "b", "c")):
        image, cells = _image(n)
        tifffile.imwrite(folder / f"{name}.tif", image)
        truths[name] = cells
    return Collection.from_folder(folder), truths


def _annotate(collection, item_id, cells, class_name="cell"):
    from ilastik_web.abc import Box

    shape = cells.shape
    collection.add_object(item_id, Box((0, 0, 0), (1, *shape)), cells[None],
                          class_name=class_name, user="ann")


def test_training_takes_samples_of_every_annotated_item(collection):
    coll, truths = collection
    with pytest.raises(InvalidRequestError, match="annotated"):
        train_across_items(coll, SELECTION, ArrayCache(64 << 20))
    _annotate(coll, "a", truths["a"])
    _annotate(coll, "b", truths["b"])
    trained = train_across_items(coll, SELECTION, ArrayCache(64 << 20), max_samples=2000)
    assert trained.class_names == {1: BACKGROUND, 2: "cell"}
    assert set(trained.items) == {"a", "b"}
    assert all(count == 1000 for count in trained.items.values())
    assert trained.classifier.report.samples == 2000
    # It predicts the item nobody annotated: cells are where the bright squares are.
    proba = trained.predict(coll.open("c"), ArrayCache(64 << 20))
    assert proba.shape == (2, 1, 32, 32)
    predicted = proba[1, 0] > 0.5
    assert (predicted == truths["c"]).mean() > 0.95
    pyramids = trained.pyramids(coll.open("c"), ArrayCache(64 << 20))
    assert set(pyramids) >= {"probabilities", "segmentation"}


def test_one_class_everywhere_cannot_train(collection):
    coll, truths = collection
    everything = np.ones((32, 32), bool)
    _annotate(coll, "a", everything)
    with pytest.raises(InvalidRequestError, match="two classes"):
        train_across_items(coll, SELECTION, ArrayCache(64 << 20))
