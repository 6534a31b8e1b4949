"""Instance tools: polygon/cut geometry, every edit undoable per author, durable, and one
undo history with the project's label edits."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError, NotFoundError
from ilastik_web.labels import Stroke
from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sam.instance_geometry import (
    outline,
    polygon_mask,
    polyline_mask,
    split_region,
)
from ilastik_web.sam.instances import InstanceStore

SHAPE = (4, 40, 50)


def square(x0, y0, x1, y1, z=1.5):
    return [[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]


# -- geometry --------------------------------------------------------------------------------


def test_polygon_fills_voxels_whose_centres_are_inside():
    ref = SliceRef(SHAPE, "xy", 1)
    box, mask = polygon_mask(ref, square(2, 3, 6, 5))
    assert box == Box((1, 3, 2), (2, 5, 6)) and mask.all()
    # A triangle: the diagonal voxel centres decide.
    box, mask = polygon_mask(ref, [[0, 0, 1], [4.2, 0, 1], [0, 4.2, 1]])
    expected = np.add.outer(np.arange(4) + 0.5, np.arange(4) + 0.5) < 4.2
    assert box == Box((1, 0, 0), (2, 4, 4))
    np.testing.assert_array_equal(mask[0], expected[: box.shape[1], : box.shape[2]])


@pytest.mark.parametrize("plane,normal", [("xz", 1), ("yz", 2)])
def test_polygon_on_other_planes(plane, normal):
    ref = SliceRef(SHAPE, plane, 7)
    # In-plane axes: xz -> (z rows, x cols); yz -> (z rows, y cols).
    pts = [[0, 0, 0], [3, 3, 0], [3, 3, 2], [0, 0, 2]]
    if plane == "xz":
        pts = [[x, 7.5, z] for x, _, z in ([0, 0, 0], [3, 0, 0], [3, 0, 2], [0, 0, 2])]
    else:
        pts = [[7.5, y, z] for _, y, z in ([0, 0, 0], [0, 3, 0], [0, 3, 2], [0, 0, 2])]
    box, mask = polygon_mask(ref, pts)
    assert box.start[normal] == 7 and box.shape[normal] == 1
    assert mask.sum() == 6


def test_polygon_errors():
    ref = SliceRef(SHAPE, "xy", 0)
    with pytest.raises(InvalidRequestError):
        polygon_mask(ref, [[0, 0, 0], [1, 1, 0]])
    with pytest.raises(InvalidRequestError, match="outside"):
        polygon_mask(ref, square(100, 100, 120, 120))
    with pytest.raises(InvalidRequestError, match="no voxel centre"):
        polygon_mask(ref, square(2.6, 2.6, 2.9, 2.9))
    with pytest.raises(InvalidRequestError):
        polygon_mask(ref, [[0, 0, 0], [1, float("nan"), 0], [2, 2, 0]])


def test_split_along_a_line_keeps_the_larger_part():
    ref = SliceRef(SHAPE, "xy", 0)
    region = np.zeros(ref.image_shape, bool)
    region[10:20, 10:30] = True
    cut = polyline_mask(ref, [[24.5, -5, 0.5], [24.5, 60, 0.5]])  # beyond the slice
    part = split_region(region, cut)
    assert part[10:20, 25:30].all() and part.sum() == 50
    with pytest.raises(InvalidRequestError, match="does not cut"):
        split_region(region, polyline_mask(ref, [[15.5, 5, 0.5], [15.5, 14, 0.5]]))


def test_diagonal_cut_separates_four_connected_pieces():
    ref = SliceRef(SHAPE, "xy", 0)
    region = np.ones((20, 20), bool)
    region = np.pad(region, ((0, 20), (0, 30)))
    part = split_region(region, polyline_mask(ref, [[-1, -1, 0.5], [21, 21, 0.5]]))
    assert 150 < part.sum() < 200


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outline_fills_back_to_the_region(seed):
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:40, :50]
    cy, cx, r = rng.uniform(12, 28), rng.uniform(12, 36), rng.uniform(4, 10)
    region = (rr + 0.5 - cy) ** 2 + (cc + 0.5 - cx) ** 2 < r * r
    ring = outline(region)[0]
    ref = SliceRef(SHAPE, "xy", 2)
    xyz = ref.to_viewer(ring)
    box, mask = polygon_mask(ref, xyz)
    filled = np.zeros_like(region)
    filled[box.start[1]:box.stop[1], box.start[2]:box.stop[2]] = mask[0]
    np.testing.assert_array_equal(filled, region)


# -- the store ---------------------------------------------------------------------------------


def polygon(store, pts, object_id=None, replace=False, author=None, z=1):
    ref = SliceRef(store.shape, "xy", z)
    box, mask = polygon_mask(ref, pts)
    return store.paint_polygon(ref, box, mask, object_id, replace=replace, author=author)


def ids_on(store, z=1):
    return store.read(Box((z, 0, 0), (z + 1, *store.shape[1:])))[0]


def test_polygon_new_added_replaced_cleared_and_undone():
    store = InstanceStore(SHAPE, block_shape=(2, 16, 16))
    a = polygon(store, square(2, 2, 10, 10)).object_id
    b = polygon(store, square(20, 2, 30, 10)).object_id
    assert (a, b) == (1, 2)
    polygon(store, square(10, 2, 14, 6), object_id=a)  # added to a
    assert (ids_on(store)[2:6, 10:14] == a).all()
    polygon(store, square(4, 4, 6, 6), object_id=a, replace=True)  # new vertices on z=1
    assert (ids_on(store) == a).sum() == 4 and (ids_on(store) == b).sum() == 80
    store.clear_slice(SliceRef(SHAPE, "xy", 1), a)
    assert store.object_ids == [b]
    store.undo()
    assert (ids_on(store) == a).sum() == 4
    store.undo()
    assert (ids_on(store) == a).sum() == 64 + 16
    assert store.sources() == {a: "polygon", b: "polygon"}
    store.redo()
    store.redo()
    assert store.object_ids == [b]


def test_cut_splits_or_trims_and_brush_touches_only_the_selected_object():
    store = InstanceStore(SHAPE, block_shape=(2, 16, 16))
    a = store.add(Box((1, 0, 0), (2, 10, 20)), np.ones((1, 10, 20), bool))
    b = polygon(store, square(20, 0, 30, 10)).object_id
    ref = SliceRef(SHAPE, "xy", 1)
    region = ids_on(store) == a
    part = split_region(region, polyline_mask(ref, [[14.5, -1, 1.5], [14.5, 11, 1.5]]))
    split = store.cut(a, ref.box, part[None])
    c = split.object_id
    assert c == 3 and (ids_on(store) == c).sum() == 50 and store.sources()[c] == "sam"
    box, mask = polygon_mask(ref, square(0, 0, 5, 5))
    store.cut(a, box, mask, remove=True)
    assert (ids_on(store)[:5, :5] == 0).all()
    with pytest.raises(InvalidRequestError, match="no voxel of object"):
        store.cut(b, box, mask)
    # Brush over a, b and background: only background and a's own voxels become a.
    stroke = Stroke(((1.5, 7.5, 1.5), (1.5, 7.5, 35.5)), radius=1.5, label=1)
    store.brush(stroke, a, author="ann")
    row = ids_on(store)[7]
    assert (row[:14] == a).all() and (row[15:20] == c).all() and (row[20:30] == b).all()
    assert (row[30:36] == a).all()
    store.brush(stroke, b, erase=True, author="ann")
    assert (ids_on(store)[6:9, 20:30] == 0).all() and (ids_on(store)[:6, 20:30] == b).all()
    assert store.object_sources(a) == ["sam", "brush"]
    new = store.brush(Stroke(((1.5, 30.5, 40.5),), radius=2, label=1)).object_id
    assert store.sources()[new] == "brush"
    with pytest.raises(InvalidRequestError, match="eraser needs"):
        store.brush(stroke, None, erase=True)


def test_merge_delete_and_ids_never_reused():
    store = InstanceStore(SHAPE, block_shape=(2, 16, 16))
    a = polygon(store, square(0, 0, 5, 5)).object_id
    b = polygon(store, square(30, 30, 40, 40), z=3).object_id
    store.merge(a, b)
    assert store.object_ids == [a] and store.bounding_box(a) == Box((1, 0, 0), (4, 40, 40))
    store.undo()
    assert store.object_ids == [a, b]
    store.remove(b)
    with pytest.raises(NotFoundError):
        store.remove(b)
    with pytest.raises(NotFoundError):
        store.merge(a, b)
    store.undo()
    store.undo()  # b's polygon itself
    assert polygon(store, square(10, 10, 12, 12)).object_id == 3  # not 2, b could come back
    with pytest.raises(InvalidRequestError, match="two different"):
        store.merge(a, a)


def test_undo_and_redo_per_author():
    store = InstanceStore(SHAPE, block_shape=(2, 16, 16))
    a = polygon(store, square(0, 0, 5, 5), author="ann").object_id
    b = polygon(store, square(10, 10, 15, 15), author="bob").object_id
    store.undo("ann")
    assert store.object_ids == [b]
    assert not store.can_undo_by("ann") and store.can_redo_by("ann")
    store.redo("ann")
    assert store.object_ids == [a, b]
    store.undo("ann")
    polygon(store, square(20, 20, 22, 22), author="ann")  # ends ann's redo history
    assert not store.can_redo_by("ann")


def test_reopen_replays_the_log_and_the_checkpoint(tmp_path):
    store = InstanceStore(SHAPE, tmp_path / "inst", block_shape=(2, 16, 16),
                          checkpoint_every=3)
    a = polygon(store, square(0, 0, 5, 5), author="ann").object_id
    b = store.add(Box((0, 0, 10), (4, 4, 14)), np.ones((4, 4, 4), bool), author="bob")
    store.merge(a, b, author="ann")  # a checkpoint here
    store.undo("ann")
    c = store.brush(Stroke(((2.5, 20.5, 20.5),), radius=2, label=1), author="ann").object_id
    expected = store.read(Box.from_shape(SHAPE))
    history = [[e.revision for e in part] for part in store.history()]
    store.close()
    again = InstanceStore(SHAPE, tmp_path / "inst", block_shape=(2, 16, 16))
    np.testing.assert_array_equal(again.read(Box.from_shape(SHAPE)), expected)
    assert [[e.revision for e in part] for part in again.history()] == history
    assert again.sources() == {a: "polygon", b: "sam", c: "brush"}
    again.undo("ann")
    again.undo("ann")
    assert again.object_ids == [b]
    assert again.add(Box((0, 0, 0), (1, 1, 1)), np.ones((1, 1, 1), bool)) == c + 1


def test_holds_objects_says_whether_a_folder_has_a_store(tmp_path):
    folder = tmp_path / "s"
    assert not InstanceStore.holds_objects(folder)
    store = InstanceStore(SHAPE, folder)
    assert not InstanceStore.holds_objects(folder)  # an empty log
    store.add(Box((0, 0, 0), (1, 1, 1)), np.ones((1, 1, 1), bool))
    assert InstanceStore.holds_objects(folder)
    store.checkpoint()
    assert InstanceStore.holds_objects(folder)


def test_old_one_file_per_object_layout_is_imported(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    mask = np.ones((1, 2, 3), bool)
    np.savez_compressed(folder / "00000004.npz", start=np.array([0, 1, 1]),
                        stop=np.array([1, 3, 4]), bits=np.packbits(mask.ravel()))
    store = InstanceStore(SHAPE, folder)
    assert store.object_ids == [4] and store.sources() == {4: "sam"}
    assert not store.can_undo_by(None)
    assert store.add(Box((2, 0, 0), (3, 1, 1)), np.ones((1, 1, 1), bool)) == 5


# -- one undo history with the labels ------------------------------------------------------------


@pytest.fixture
def project(tmp_path):
    from ilastik_web.abc import MultiscaleVolume
    from ilastik_web.project import Project
    from ilastik_web.sources.array import ArrayVolume

    data = np.random.default_rng(0).random((1, *SHAPE)).astype(np.float32)
    source = MultiscaleVolume("m", [ArrayVolume(data, (1.0, 1.0, 1.0))])
    project = Project.create(tmp_path / "p", source, classes=["a"])
    yield project
    project.close()


def label_stroke(x):
    return Stroke(((1.5, 20.5, x),), radius=1, label=1)


def test_undo_and_redo_interleave_label_and_instance_edits(project):
    labels, inst = project.labels, project.instances
    project.paint(label_stroke(5.5), author="ann")                    # L1
    a = polygon(inst, square(0, 0, 5, 5), author="ann").object_id    # I1
    project.paint(label_stroke(25.5), author="ann")                   # L2
    polygon(inst, square(30, 0, 35, 5), author="bob")                 # bob's
    b = polygon(inst, square(10, 0, 15, 5), author="ann").object_id  # I2

    assert project.undo("ann").edit.kind == "polygon"                 # I2
    assert b not in inst.object_ids
    undone = project.undo("ann")                                      # L2
    assert labels.read(Box((1, 20, 25), (2, 21, 26))).item() == 0 and undone.edit.stroke
    project.undo("ann")                                               # I1
    assert a not in inst.object_ids and labels.read(Box((1, 20, 5), (2, 21, 6))).item() == 1
    project.redo("ann")                                               # I1 again
    assert a in inst.object_ids
    project.redo("ann")                                               # L2 again
    assert labels.read(Box((1, 20, 25), (2, 21, 26))).item() == 1
    # A new label edit by ann ends her instance redo history too.
    project.paint(label_stroke(40.5), author="ann")
    assert project.redo("ann") is None and not project.can_redo_by("ann")
    assert project.can_undo_by("bob")
    assert project.undo("bob").edit.author == "bob"


def test_a_new_instance_edit_ends_the_label_redo_history(project):
    project.paint(label_stroke(5.5), author="ann")
    project.undo("ann")
    assert project.can_redo_by("ann")
    polygon(project.instances, square(0, 0, 5, 5), author="ann")
    assert project.redo("ann") is None


def test_project_reopens_with_its_instances_and_history(project, tmp_path):
    from ilastik_web.project import Project

    project.paint(label_stroke(5.5), author="ann")
    polygon(project.instances, square(0, 0, 5, 5), author="ann")
    source = project.source
    project.close()
    again = Project.open(tmp_path / "p", source=source)
    try:
        assert again.instances.object_ids == [1]
        assert again.undo("ann").edit.kind == "polygon"
        assert again.undo("ann").edit.stroke is not None
    finally:
        again.close()


def test_object_sources_reach_the_training_set_manifest(tmp_path):
    import json

    import tifffile

    from ilastik_web.collections import Collection, ItemAnnotation
    from ilastik_web.collections.trainingset import export_training_set

    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "one.tif", np.zeros(SHAPE[1:], np.uint8), photometric="minisblack")
    collection = Collection.from_folder(folder)
    store = InstanceStore((1, *SHAPE[1:]))
    sam = store.add(Box((0, 0, 0), (1, 5, 5)), np.ones((1, 5, 5), bool))
    drawn = polygon(store, square(10, 10, 20, 20, z=0.5), z=0).object_id
    painted = store.brush(Stroke(((0.5, 30.5, 30.5),), radius=3, label=1)).object_id
    store.brush(Stroke(((0.5, 20.5, 20.5),), radius=2, label=1), drawn)  # still a polygon
    annotation = ItemAnnotation(store.read(Box.from_shape(store.shape)),
                                sources=store.sources(), author="ann")
    collection.save("one", annotation, user="ann")
    manifest = export_training_set(collection, tmp_path / "set", layout="tiff")
    objects = json.loads((tmp_path / "set" / "manifest.json").read_text())["items"][0]["objects"]
    assert manifest["items"][0]["objects"] == objects
    assert {o["id"]: o["source"] for o in objects} == {sam: "sam", drawn: "polygon",
                                                       painted: "brush"}
