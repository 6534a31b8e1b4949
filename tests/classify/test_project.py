import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError, NotFoundError, NotReadyError
from ilastik_web.labels import Stroke
from ilastik_web.project import Project


def _paint_session(project, truth):
    """Scribble inside a few blobs and on background, on two z slices only."""
    strokes = 0
    for z in (6, 17):
        blob = np.argwhere(truth[z] == 2)
        back = np.argwhere(truth[z] == 1)
        rng = np.random.default_rng(z)
        for label, pts in ((2, blob), (1, back)):
            for _ in range(3):
                y, x = pts[rng.integers(len(pts))]
                project.paint(Stroke(((z + 0.5, y + 0.5, x + 0.5),), radius=1.5, label=label))
                strokes += 1
    return strokes


def test_scripted_session_segments_unlabelled_voxels(tmp_path, blobs, blob_source):
    image, truth = blobs
    project = Project.create(tmp_path / "p", blob_source, classes=["background", "blob"])
    with pytest.raises(NotReadyError):
        project.predict(Box((0, 0, 0), (1, 8, 8)))
    _paint_session(project, truth)
    assert project.train() == 1
    proba = project.predict(Box.from_shape(image.shape))
    seg = np.argmax(proba, axis=0) + 1
    far = np.ones(truth.shape, bool)
    far[3:10] = False
    far[14:21] = False  # only slices far from any stroke count
    accuracy = (seg[far] == truth[far]).mean()
    print(f"accuracy far from strokes: {accuracy:.3f}")
    assert accuracy > 0.9


def test_coarse_level_prediction_agrees_with_full_resolution(blobs, blob_source):
    image, truth = blobs
    project = Project.create(None, blob_source, classes=["background", "blob"])
    _paint_session(project, truth)
    project.train()
    fine = np.argmax(project.predict(Box.from_shape(image.shape)), axis=0)
    coarse_shape = blob_source.levels[1].shape
    coarse = np.argmax(project.predict(Box.from_shape(coarse_shape), level=1), axis=0)
    fine_down = fine[:, ::2, ::2][:, : coarse_shape[1], : coarse_shape[2]]
    assert (coarse == fine_down).mean() > 0.85


def test_reopen_keeps_everything(tmp_path, blobs, blob_source):
    image, truth = blobs
    project = Project.create(tmp_path / "p", blob_source, classes=["background", "blob"])
    project.update_class(2, color="#00ccff", name="cells")
    _paint_session(project, truth)
    project.train()
    box = Box((5, 10, 10), (7, 40, 40))
    expected = project.predict(box)
    revision = project.labels.revision
    project.close()
    again = Project.open(tmp_path / "p", source=blob_source)
    assert [c.name for c in again.classes] == ["background", "cells"]
    assert again.classes[1].color == "#00ccff"
    assert again.labels.revision == revision
    assert again.generation == 1
    assert np.array_equal(again.predict(box), expected)


def test_class_errors_and_removal(blob_source):
    project = Project.create(None, blob_source, classes=["a", "b"])
    with pytest.raises(InvalidRequestError):
        project.paint(Stroke(((1.5, 1.5, 1.5),), radius=1, label=7))
    with pytest.raises(NotFoundError):
        project.update_class(7, name="x")
    with pytest.raises(InvalidRequestError):
        project.add_class("c", color="red")
    project.paint(Stroke(((1.5, 5.5, 5.5),), radius=2, label=2))
    project.remove_class(2)
    assert project.labels.snapshot().counts() == {}
    project.undo()
    assert 2 in project.labels.snapshot().counts()


def test_live_training_debounces_and_bumps_generation(blobs, blob_source):
    image, truth = blobs
    project = Project.create(None, blob_source, classes=["background", "blob"], live=True,
                             debounce_s=0.2)
    events = []
    project.subscribe(lambda kind, payload: events.append((kind, payload)))
    try:
        _paint_session(project, truth)
        status = project.wait_for_training(timeout=120)
        assert status.generation >= 1
        generations = [p["generation"] for k, p in events if k == "generation"]
        # 12 quick strokes are trained on far fewer times than 12 (debounced, superseded).
        assert 1 <= len(generations) < 6
        before = project.generation
        project.set_selection([("GaussianSmoothing", 1.0), ("GaussianGradientMagnitude", 1.0)])
        project.wait_for_training(timeout=120)
        assert project.generation == before + 1
        assert len(project.feature_importances()) == 2
    finally:
        project.close()


def test_training_tiles_follow_the_stroke_plane():
    from ilastik_web.classify.features import training_tiles
    from ilastik_web.labels import LabelStore

    store = LabelStore((40, 300, 300), block_shape=(16, 64, 64))
    store.paint(Stroke(((5.5, 10.5, 10.5), (5.5, 100.5, 280.5)), radius=2, label=1))
    store.paint(Stroke(((2.5, 150.5, 20.5), (30.5, 150.5, 40.5)), radius=2, label=2, plane="xz"))
    tiles = training_tiles(store.snapshot(), tile_edge=256)
    xy = [t for t in tiles if t.shape[0] == 1]
    xz = [t for t in tiles if t.shape[1] == 1]
    # The xy stroke gets xy tiles on the viewer's 256-grid; the xz stroke gets xz tiles.
    assert [t for t in xy if t.start[0] == 5] == [Box((5, 0, 0), (6, 256, 256)),
                                                  Box((5, 0, 256), (6, 256, 300))]
    assert {t.start[1] for t in xz} == {150}
    covered = np.zeros((40, 300, 300), bool)
    for t in tiles:
        covered[t.slices] = True
    labels = store.read(Box.from_shape((40, 300, 300)))
    assert covered[labels > 0].all()


def test_retraining_computes_features_only_of_changed_tiles(blobs, blob_source):
    from ilastik_web.cache import ArrayCache
    from ilastik_web.classify.features import (
        FeatureComputer,
        TrainingSamples,
        gather_training_samples,
    )
    from ilastik_web.labels import LabelStore

    computer = FeatureComputer(blob_source, [("GaussianSmoothing", 1.0)], ArrayCache(0))
    computed = []
    original = computer._compute
    computer._compute = lambda level, box: computed.append(box) or original(level, box)
    store = LabelStore(blob_source.base.shape)
    store.paint(Stroke(((3.5, 5.5, 5.5), (3.5, 5.5, 30.5)), radius=1.5, label=1))
    store.paint(Stroke(((9.5, 5.5, 5.5), (9.5, 20.5, 5.5)), radius=1.5, label=2))
    samples = TrainingSamples()
    X1, y1 = gather_training_samples(computer, store.snapshot(), samples=samples)
    assert len(computed) == 2  # two planes, one tile each (no feature cache at all)
    store.paint(Stroke(((9.5, 30.5, 30.5), (9.5, 40.5, 40.5)), radius=1.5, label=1))
    X2, y2 = gather_training_samples(computer, store.snapshot(), samples=samples)
    assert len(computed) == 3  # only the plane the new stroke changed
    fresh_X, fresh_y = gather_training_samples(computer, store.snapshot())
    np.testing.assert_array_equal(X2, fresh_X)
    np.testing.assert_array_equal(y2, fresh_y)
    assert len(y2) > len(y1)


def test_the_plane_of_the_latest_edit(blob_source):
    """What the painter watches: boxes in the plane the latest stroke was painted in."""
    project = Project.create(None, blob_source, classes=["a", "b"])
    assert not project.shows_latest_edit(Box((5, 0, 0), (6, 16, 16)))
    project.paint(Stroke(((5.5, 4.5, 4.5), (5.5, 10.5, 12.5)), radius=1.5, label=1))
    assert project.shows_latest_edit(Box((5, 0, 0), (6, 16, 16)))
    assert project.shows_latest_edit(Box((0, 16, 16), (8, 32, 32)))  # crosses the plane
    assert not project.shows_latest_edit(Box((6, 0, 0), (7, 16, 16)))
    project.paint(Stroke(((2.5, 3.5, 4.5), (9.5, 3.5, 12.5)), radius=0.5, label=2))  # xz
    assert project.shows_latest_edit(Box((0, 3, 0), (16, 4, 16)))
    assert not project.shows_latest_edit(Box((5, 0, 0), (6, 3, 16)))
