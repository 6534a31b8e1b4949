"""Image collections: items of a folder, navigation, assignment, annotations beside the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from ilastik_web.collections import (
    LOCAL_USER,
    Assignments,
    Collection,
    ItemAnnotation,
)
from ilastik_web.errors import ForbiddenError, InvalidRequestError, NotFoundError


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "images"
    data.mkdir()
    tifffile.imwrite(data / "b cells.tif", rng.integers(0, 255, (30, 40), dtype=np.uint8))
    tifffile.imwrite(data / "a.tiff", rng.integers(0, 255, (30, 40), dtype=np.uint8))
    tifffile.imwrite(data / "c_stack.tif", rng.integers(0, 255, (3, 20, 24), dtype=np.uint8),
                    photometric="minisblack")
    (data / "notes.txt").write_text("not an image")
    (data / ".hidden.tif").write_bytes(b"")
    return data


def _annotation(shape, objects=((1, "cell", "sam"),)):
    labels = np.zeros(shape, dtype=np.uint32)
    for i, (object_id, _, _) in enumerate(objects):
        labels[0, 2 + 3 * i: 4 + 3 * i, 2:5] = object_id
    return ItemAnnotation(labels, {o: c for o, c, _ in objects}, {o: s for o, _, s in objects})


def test_folder_items_are_the_images_sorted_with_stable_ids(folder):
    collection = Collection.from_folder(folder)
    assert [item.item_id for item in collection.items] == ["a", "b-cells", "c_stack"]
    assert collection.open("c_stack").base.shape == (3, 20, 24)
    assert collection.open("a").base.shape == (1, 30, 40)
    assert collection.neighbour("a", 1).item_id == "b-cells"
    assert collection.neighbour("a", -1) is None
    assert collection.neighbour("c_stack", 1) is None
    with pytest.raises(NotFoundError):
        collection.item("zzz")


def test_annotations_live_beside_the_data_and_mark_items_done(folder):
    before = sorted(p.name for p in folder.iterdir())
    collection = Collection.from_folder(folder)
    meta = collection.save("b-cells", _annotation((1, 30, 40), [(1, "cell", "sam"),
                                                               (2, "nucleus", "polygon")]))
    assert meta["author"] == LOCAL_USER and meta["classes"] == {"1": "cell", "2": "nucleus"}
    assert sorted(p.name for p in folder.iterdir()) == sorted(before + ["annotations"])
    assert (folder / "annotations" / "b-cells.tif").is_file()
    on_disk = json.loads((folder / "annotations" / "b-cells.json").read_text())
    assert on_disk["sources"] == {"1": "sam", "2": "polygon"} and on_disk["time"] > 0
    loaded = Collection.from_folder(folder).annotations.load("b-cells")
    assert loaded.object_ids == [1, 2] and loaded.classes == {1: "cell", 2: "nucleus"}
    assert loaded.labels.shape == (1, 30, 40)
    status = {s["id"]: s for s in collection.status()}
    assert status["b-cells"]["annotated"] and not status["a"]["annotated"]


def test_bad_annotations_are_refused(folder):
    collection = Collection.from_folder(folder)
    with pytest.raises(InvalidRequestError, match="do not fit"):
        collection.save("a", _annotation((1, 10, 10)))
    with pytest.raises(InvalidRequestError, match="not in the labels"):
        ItemAnnotation(np.zeros((1, 4, 4), np.uint32), {3: "cell"})
    with pytest.raises(InvalidRequestError, match="sources"):
        ItemAnnotation(np.ones((1, 4, 4), np.uint32), {}, {1: "magic"})
    with pytest.raises(InvalidRequestError, match="integer"):
        ItemAnnotation(np.zeros((4, 4), np.float32))


def test_two_annotators_never_get_the_same_item(folder):
    collection = Collection.from_folder(folder)
    alice = collection.next_unannotated("alice")
    bob = collection.next_unannotated("bob")
    assert alice.item_id == "a" and bob.item_id == "b-cells"
    # Asking again gives alice her own item back, not bob's.
    assert collection.next_unannotated("alice").item_id == "a"
    with pytest.raises(ForbiddenError, match="alice"):
        collection.save("a", _annotation((1, 30, 40)), user="bob")
    collection.save("a", _annotation((1, 30, 40)), user="alice")
    assert collection.next_unannotated("alice").item_id == "c_stack"
    assert collection.next_unannotated("carol") is None  # all annotated or taken
    collection.assignments.release("b-cells", "bob")
    assert collection.next_unannotated("carol").item_id == "b-cells"
    assert {s["id"]: s["assigned_to"] for s in collection.status()}["b-cells"] == "carol"


def test_claims_lapse(tmp_path):
    now = [1000.0]
    claims = Assignments(tmp_path / "a.json", claim_seconds=60, clock=lambda: now[0])
    assert claims.claim("x", "alice")
    assert not claims.claim("x", "bob", exclusive=True)
    now[0] += 61
    assert claims.holder("x") is None and claims.claim("x", "bob", exclusive=True)
    with pytest.raises(InvalidRequestError):
        claims.claim("x", "")


def test_a_list_collection_and_empty_folders(folder, tmp_path):
    collection = Collection([str(folder / "c_stack.tif"), str(folder / "a.tiff")],
                            tmp_path / "ann")
    assert [i.item_id for i in collection.items] == ["c_stack", "a"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequestError, match="no readable"):
        Collection.from_folder(tmp_path / "empty")
    with pytest.raises(NotFoundError):
        Collection.from_folder(tmp_path / "missing")
