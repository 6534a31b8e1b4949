"""Training sets out of a collection: TIFF, cellpose and OME-Zarr layouts, split by item."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from ilastik_web.collections import Collection, ItemAnnotation
from ilastik_web.collections.trainingset import export_training_set, split_items
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sources import open_source


@pytest.fixture
def collection(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    images = {}
    for name, shape in (("one", (30, 40)), ("two", (30, 40)), ("three", (3, 20, 24)),
                        ("four", (30, 40))):
        images[name] = rng.integers(0, 255, shape, dtype=np.uint8)
        tifffile.imwrite(folder / f"{name}.tif", images[name], photometric="minisblack")
    collection = Collection.from_folder(folder)
    for name, user, source in (("one", "alice", "sam"), ("two", "bob", "polygon"),
                               ("three", "alice", "brush")):
        shape = (1, *images[name].shape) if images[name].ndim == 2 else images[name].shape
        labels = np.zeros(shape, np.uint32)
        labels[0, 1:5, 1:6] = 1
        labels[-1, 8:12, 3:9] = 2
        collection.save(name, ItemAnnotation(labels, {1: "cell", 2: source + "-class"},
                                             {1: source, 2: "sam"}), user=user)
    return collection, images


@pytest.mark.parametrize("layout", ["tiff", "cellpose", "ome-zarr"])
def test_export_layouts_and_manifest(collection, tmp_path, layout):
    collection, images = collection
    out = tmp_path / f"set-{layout}"
    manifest = export_training_set(collection, out, layout=layout, val_fraction=0.34)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    by_item = {e["item"]: e for e in manifest["items"]}
    assert sorted(by_item) == ["one", "three", "two"]  # "four" has no annotation
    assert sorted(e["split"] for e in by_item.values()) == ["train", "train", "val"]
    assert by_item["two"]["author"] == "bob" and by_item["two"]["time"] > 0
    assert by_item["three"]["objects"] == [{"id": 1, "class": "cell", "source": "brush"},
                                           {"id": 2, "class": "brush-class", "source": "sam"}]
    assert manifest["classes"] == ["brush-class", "cell", "polygon-class", "sam-class"]
    for item, entry in by_item.items():
        annotation = collection.annotations.load(item)
        if layout == "ome-zarr":
            image = open_source(str(out / entry["image"].rsplit("/", 1)[0]))
            assert image.base.shape == annotation.labels.shape
            import zarr

            labels = zarr.open_array(str(out / entry["labels"]), mode="r")[...]
            np.testing.assert_array_equal(labels, annotation.labels)
            group = zarr.open_group(str(out / entry["image"].rsplit("/", 1)[0]), mode="r")
            assert group["labels"].attrs["labels"] == ["instances"]
        else:
            np.testing.assert_array_equal(tifffile.imread(out / entry["image"]), images[item])
            labels = tifffile.imread(out / entry["labels"])
            np.testing.assert_array_equal(labels, annotation.labels.reshape(labels.shape))
            if layout == "cellpose":
                assert entry["labels"] == entry["image"].replace(".tif", "_masks.tif")
            else:
                assert "/images/" in entry["image"] and "/labels/" in entry["labels"]


def test_split_is_by_item_and_seeded():
    items = [f"i{n}" for n in range(10)]
    a, b = split_items(items, 0.2, seed=3), split_items(items, 0.2, seed=3)
    assert a == b and sum(v == "val" for v in a.values()) == 2
    assert split_items(["x", "y"], 0.01)["x"] != split_items(["x", "y"], 0.01)["y"]
    assert set(split_items(["x"], 0.5).values()) == {"train"}
    with pytest.raises(InvalidRequestError):
        split_items(items, 1.0)


def test_refusals(collection, tmp_path):
    collection, _ = collection
    with pytest.raises(InvalidRequestError, match="layout"):
        export_training_set(collection, tmp_path / "x", layout="png")
    out = tmp_path / "once"
    export_training_set(collection, out)
    with pytest.raises(InvalidRequestError, match="exists"):
        export_training_set(collection, out)
    export_training_set(collection, out, overwrite=True, val_fraction=0.0)
    empty = Collection([str(tmp_path / "images" / "four.tif")], tmp_path / "ann")
    with pytest.raises(InvalidRequestError, match="no item"):
        export_training_set(empty, tmp_path / "y")
