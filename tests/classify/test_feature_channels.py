"""The choice of input channels that feed the features (ilastik's channel selection)."""

import json

import numpy as np
import pytest

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.classify.features import FeatureComputer, check_channels
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels import Stroke
from ilastik_web.project import Project
from ilastik_web.sources.array import ArrayVolume

SELECTION = [("GaussianSmoothing", 1.0), ("HessianOfGaussianEigenvalues", 1.0)]


def _two_channels(blobs, noise_seed=1):
    image, truth = blobs
    noise = np.random.default_rng(noise_seed).integers(0, 1000, image.shape).astype(image.dtype)
    stack = np.stack([noise, image])  # channel 1 holds the blobs, channel 0 noise
    volume = ArrayVolume(stack, voxel_size=(2.0, 1.0, 1.0), chunk_shape=(8, 32, 32))
    return MultiscaleVolume(f"two-{noise_seed}", [volume]), image, truth


def test_chosen_channel_gives_that_channels_features(blobs):
    source, image, _ = _two_channels(blobs)
    single = MultiscaleVolume("one", [ArrayVolume(image[None], voxel_size=(2.0, 1.0, 1.0),
                                                  chunk_shape=(8, 32, 32))])
    box = Box((4, 10, 10), (9, 40, 50))
    chosen = FeatureComputer(source, SELECTION, ArrayCache(1 << 26), channels=[1])
    reference = FeatureComputer(single, SELECTION, ArrayCache(0))
    both = FeatureComputer(source, SELECTION, ArrayCache(0))
    assert chosen.channels == (1,) and both.channels == (0, 1)
    assert chosen.num_features == reference.num_features == both.num_features // 2
    np.testing.assert_array_equal(chosen.features(0, box), reference.features(0, box))
    # Names say which channel: a classifier of another channel never passes for this one's.
    assert chosen.channel_names == [n + " on channel 1" for n in reference.channel_names]
    other = FeatureComputer(source, SELECTION, ArrayCache(0), channels=[0])
    assert other.channel_names != chosen.channel_names
    # The cache keys name the channels: the other channel is not served from the cache.
    assert not np.array_equal(other.features(0, box), chosen.features(0, box))


@pytest.mark.parametrize("channels,message", [([], "at least one"), ([0, 0], "repeated"),
                                              ([2], "no channel 2"), ([-1], "no channel -1"),
                                              (["0"], "indices"), ([True], "indices")])
def test_bad_channel_choices_are_refused(channels, message):
    with pytest.raises(ValueError, match=message):
        check_channels(channels, 2)
    assert check_channels(None, 3) == (0, 1, 2)
    assert check_channels([2, 0], 3) == (0, 2)


def _paint(project, truth):
    for z in (6, 17):
        rng = np.random.default_rng(z)
        for label in (2, 1):
            points = np.argwhere(truth[z] == label)
            for _ in range(3):
                y, x = points[rng.integers(len(points))]
                project.paint(Stroke(((z + 0.5, y + 0.5, x + 0.5),), radius=1.5, label=label))


def test_project_trains_and_predicts_on_the_chosen_channels_and_keeps_them(tmp_path, blobs):
    source, _, truth = _two_channels(blobs)
    project = Project.create(tmp_path / "p", source, classes=["background", "blob"],
                             selection=SELECTION)
    assert project.feature_channels == (0, 1)
    events = []
    project.subscribe(lambda kind, payload: events.append((kind, payload)))
    project.set_feature_channels([1])
    assert ("features", {"features": [["GaussianSmoothing", 1.0, False],
                                      ["HessianOfGaussianEigenvalues", 1.0, False]],
                         "channels": [1]}) in events
    assert json.loads((tmp_path / "p" / "project.json").read_text())["feature_channels"] == [1]
    _paint(project, truth)
    project.train()
    classifier = project.current_generation().classifier
    assert all(name.endswith(" on channel 1") for name in classifier.feature_names)
    # Only channel 1 feeds the features: other noise in channel 0 predicts the same.
    noisier, _, _ = _two_channels(blobs, noise_seed=7)
    twin = Project.create(None, noisier, classes=["background", "blob"], selection=SELECTION,
                          feature_channels=[1])
    _paint(twin, truth)
    twin.train()
    box = Box((10, 0, 0), (12, 64, 64))
    np.testing.assert_array_equal(project.predict(box), twin.predict(box))
    accuracy = (np.argmax(project.predict(box), axis=0) + 1 == truth[10:12]).mean()
    assert accuracy > 0.9
    generation = project.generation
    project.close()

    reopened = Project.open(tmp_path / "p", source=source)
    assert reopened.feature_channels == (1,)
    assert reopened.generation == generation
    np.testing.assert_array_equal(reopened.predict(box), twin.predict(box))
    # A feature-selection change keeps the channel choice.
    reopened.set_selection([("GaussianSmoothing", 1.6)])
    assert reopened.feature_channels == (1,)
    with pytest.raises(InvalidRequestError, match="no channel 5"):
        reopened.set_feature_channels([5])
    reopened.set_feature_channels(None)
    assert reopened.feature_channels == (0, 1)
    reopened.close()


def test_a_classifier_of_other_channels_is_not_reloaded(tmp_path, blobs):
    source, _, truth = _two_channels(blobs)
    project = Project.create(tmp_path / "p", source, classes=["background", "blob"],
                             selection=SELECTION, feature_channels=[1])
    _paint(project, truth)
    project.train()
    project.set_feature_channels([0])  # the next training will use channel 0
    project.close()
    reopened = Project.open(tmp_path / "p", source=source)
    assert reopened.feature_channels == (0,)
    with pytest.raises(Exception, match="no classifier"):
        reopened.current_generation()  # the saved one was trained on channel 1
    reopened.close()
