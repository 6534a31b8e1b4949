"""Objects of a collection item: each change is written through to annotations/."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from ilastik_web.abc import Box
from ilastik_web.collections import Collection, ItemAnnotation
from ilastik_web.errors import ForbiddenError, InvalidRequestError, NotFoundError


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "images"
    data.mkdir()
    for name in ("one", "two"):
        tifffile.imwrite(data / f"{name}.tif", rng.integers(0, 255, (24, 32), dtype=np.uint8))
    return data


def _square(y0, x0, size=5):
    return Box((0, y0, x0), (1, y0 + size, x0 + size)), np.ones((1, size, size), bool)


def test_objects_write_through_to_the_annotation(folder):
    collection = Collection.from_folder(folder)
    first = collection.add_object("one", *_square(2, 3), class_name="cell", user="ann")
    second = collection.add_object("one", *_square(10, 12), class_name="nucleus",
                                   source="polygon", user="ann")
    assert (first, second) == (1, 2)
    stored = collection.annotations.load("one")
    assert stored.author == "ann"
    assert stored.classes == {1: "cell", 2: "nucleus"}
    assert stored.sources == {1: "sam", 2: "polygon"}
    assert stored.labels.shape == (1, 24, 32)
    assert (stored.labels == 1).sum() == 25 and (stored.labels[0, 10:15, 12:17] == 2).all()
    status = {s["id"]: s for s in collection.status("ann")}
    assert status["one"]["annotated"] and not status["two"]["annotated"]

    collection.remove_object("one", first, user="ann")
    assert collection.annotations.load("one").classes == {2: "nucleus"}
    collection.remove_object("one", second, user="ann")
    assert not collection.annotations.exists("one")  # unannotated again
    with pytest.raises(NotFoundError):
        collection.remove_object("one", second, user="ann")
    # The provider's files are untouched: only annotations/ was added.
    assert sorted(p.name for p in folder.iterdir()) == ["annotations", "one.tif", "two.tif"]


def test_objects_survive_a_restart_and_older_annotations_are_read_back(folder):
    collection = Collection.from_folder(folder)
    collection.add_object("one", *_square(2, 3), class_name="cell", user="ann")
    again = Collection.from_folder(folder)
    assert again.objects("one").list() == [{"id": 1, "class": "cell", "source": "sam"}]
    labels = np.zeros((1, 24, 32), np.uint32)
    labels[0, :4, :4] = 7
    again.save("two", ItemAnnotation(labels, {7: "blob"}, {7: "brush"}), "ann")
    objects = again.objects("two")  # seeded from the label image
    assert objects.list() == [{"id": 1, "class": "blob", "source": "brush"}]
    again.add_object("two", *_square(10, 10), user="ann")
    assert again.annotations.load("two").classes == {1: "blob", 2: "object"}


def test_an_item_held_by_someone_else_is_refused_and_unchanged(folder):
    collection = Collection.from_folder(folder)
    assert collection.next_unannotated("alice").item_id == "one"
    assert collection.next_unannotated("bob").item_id == "two"
    with pytest.raises(ForbiddenError, match="alice"):
        collection.add_object("one", *_square(2, 3), user="bob")
    assert collection.objects("one").list() == []
    assert not collection.annotations.exists("one")


def test_bad_objects_are_refused(folder):
    collection = Collection.from_folder(folder)
    with pytest.raises(InvalidRequestError):
        collection.add_object("one", *_square(2, 3), class_name="", user="ann")
    with pytest.raises(InvalidRequestError):
        collection.add_object("one", *_square(2, 3), source="magic", user="ann")
    with pytest.raises(InvalidRequestError):
        collection.add_object("one", *_square(22, 3), user="ann")  # out of the image
    meta = json.loads((folder / "annotations" / "objects" / "one" / "meta.json").read_text()) \
        if (folder / "annotations" / "objects" / "one" / "meta.json").exists() else {}
    assert meta == {}
