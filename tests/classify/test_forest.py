import numpy as np
import pytest

from ilastik_web.classify.forest import (
    PixelClassifier,
    TrainingCancelled,
    segmentation_from_probabilities,
    uncertainty_from_probabilities,
)
from ilastik_web.errors import InvalidRequestError


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 3, n).astype(np.uint8)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    X[:, 0] += (y == 2) * 3.0
    return X, y


def test_probabilities_follow_project_classes_with_zeros_for_missing():
    X, y = _data()
    clf = PixelClassifier.train(X, y, label_values=[1, 2, 3], feature_names="abcd", n_trees=10)
    feats = X.T.reshape(4, 1, 10, 30)
    proba = clf.predict_proba(feats)
    assert proba.shape == (3, 1, 10, 30)
    assert np.allclose(proba.sum(axis=0), 1.0, atol=1e-5)
    assert np.all(proba[2] == 0)
    assert (np.argmax(proba, axis=0).ravel() + 1 == y).mean() > 0.9


def test_needs_two_classes():
    X, y = _data()
    with pytest.raises(InvalidRequestError):
        PixelClassifier.train(X, np.ones_like(y), label_values=[1, 2], feature_names="abcd")


def test_stops_between_tree_batches():
    X, y = _data()
    with pytest.raises(TrainingCancelled):
        PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd",
                              should_stop=lambda: True)


def test_importances_name_every_feature(tmp_path):
    X, y = _data()
    clf = PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd", n_trees=20)
    imp = clf.feature_importances()
    assert set(imp) == set("abcd") and abs(sum(imp.values()) - 1) < 1e-6
    assert max(imp, key=imp.get) == "a"
    clf.save(tmp_path / "g1.pkl")
    again = PixelClassifier.load(tmp_path / "g1.pkl")
    feats = X.T.reshape(4, 1, 1, -1)
    assert np.array_equal(again.predict_proba(feats), clf.predict_proba(feats))


def test_segmentation_and_uncertainty():
    proba = np.array([[0.7, 0.2, 0.5], [0.2, 0.8, 0.5], [0.1, 0.0, 0.0]], np.float32)
    proba = proba.reshape(3, 1, 1, 3)
    seg = segmentation_from_probabilities(proba, [1, 2, 5])
    assert seg.ravel().tolist() == [1, 2, 1]
    unc = uncertainty_from_probabilities(proba).ravel()
    assert np.allclose(unc, [0.5, 0.4, 1.0])


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_prediction_equals_scikit_learn_whatever_the_threads(n_jobs):
    X, y = _data(n=6000)
    clf = PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd", n_trees=10)
    feats = np.asfortranarray(_data(seed=1, n=12000)[0].T.reshape(4, 2, 60, 100))
    clf.forest.set_params(n_jobs=n_jobs)
    ours = clf.predict_proba(feats)
    clf.forest.set_params(n_jobs=1)
    plain = clf.forest.predict_proba(np.ascontiguousarray(feats.reshape(4, -1).T))
    np.testing.assert_array_equal(ours.reshape(2, -1).T, plain.astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_balanced_subsample_spreads_over_classes(seed):
    from ilastik_web.classify.forest import balanced_subsample

    labels = np.repeat(np.array([1, 2, 3], np.uint8), [50, 5000, 20000])
    np.random.default_rng(seed).shuffle(labels)
    keep = balanced_subsample(labels, 3000, seed=seed)
    assert len(keep) == 3000 and np.all(np.diff(keep) > 0)
    counts = np.bincount(labels[keep], minlength=4)
    assert counts[1] == 50 and counts[2] == counts[3] == 1475  # the small class's share
    np.testing.assert_array_equal(keep, balanced_subsample(labels, 3000, seed=seed))
    np.testing.assert_array_equal(balanced_subsample(labels[:100], 3000), np.arange(100))


def test_training_is_seeded_and_pickles_plain_scikit_learn_trees():
    import pickle

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    X, y = _data(n=500)
    a = PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd", n_trees=30)
    b = PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd", n_trees=30)
    feats = _data(seed=3, n=400)[0].T.reshape(4, 1, 20, 20)
    np.testing.assert_array_equal(a.predict_proba(feats), b.predict_proba(feats))
    assert type(a.forest) is RandomForestClassifier and len(a.forest.estimators_) == 30
    assert all(type(t) is DecisionTreeClassifier for t in a.forest.estimators_)
    # Batch workers load the pickle: it must not need the library that grew the trees.
    blob = pickle.dumps(a)
    assert b"sklearnex" not in blob and b"onedal" not in blob


def test_unchanged_samples_keep_the_previous_trees_and_predict_as_a_fresh_forest():
    X, y = _data(n=500)
    feats = _data(seed=4, n=400)[0].T.reshape(4, 1, 20, 20)
    first = PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd", n_trees=20)
    again = PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd", n_trees=20,
                                  previous=first, should_stop=lambda: True)  # grows nothing
    assert again.forest is first.forest
    fresh = PixelClassifier.train(X, y, label_values=[1, 2], feature_names="abcd", n_trees=20)
    np.testing.assert_array_equal(again.predict_proba(feats), fresh.predict_proba(feats))
    changed = y.copy()
    changed[:10] = 3 - changed[:10]
    retrained = PixelClassifier.train(X, changed, label_values=[1, 2], feature_names="abcd",
                                      n_trees=20, previous=first)
    assert retrained.forest is not first.forest
    assert retrained.training_key != first.training_key
