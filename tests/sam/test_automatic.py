"""Segment everything through micro-sam's AMG and AIS, on a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
from sam_fixtures import blobs

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam import ModelSpec, load_model
from ilastik_web.sam.automatic import AutoParams, Decoders, objects_of, segment_everything
from ilastik_web.sam.instances import InstanceStore

pytest.importorskip("micro_sam")

#: Random weights predict nothing confidently: keep every candidate mask.
LOOSE = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": 8}


def rgb(shape, seed=0) -> np.ndarray:
    return np.repeat(blobs((1, *shape), seed=seed)[0, 0][..., None], 3, axis=-1)


def _check_labels(labels, shape):
    assert labels.shape == shape and labels.dtype == np.uint32
    ids = np.unique(labels)
    ids = ids[ids > 0]
    assert list(ids) == list(range(1, len(ids) + 1))  # sequential


@pytest.fixture(scope="module")
def plain(tiny_checkpoint):
    return load_model(ModelSpec("tiny", "vit_b", tiny_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def with_decoder(tiny_decoder_checkpoint):
    return load_model(ModelSpec("lm", "vit_b_lm", tiny_decoder_checkpoint), device="cpu")


def test_amg_labels_a_slice(plain):
    labels = segment_everything(plain, rgb((60, 70)), AutoParams(method="amg", **LOOSE))
    _check_labels(labels, (60, 70))
    assert labels.max() >= 1


@pytest.mark.slow
def test_amg_tiles_images_larger_than_the_model_input(plain):
    labels = segment_everything(plain, rgb((300, 270)), AutoParams(method="amg", **LOOSE),
                                halo=32)
    _check_labels(labels, (300, 270))


def test_ais_needs_a_decoder_and_auto_picks_it(plain, with_decoder):
    decoders = Decoders()
    assert decoders.get(plain) is None
    with pytest.raises(InvalidRequestError, match="no instance decoder"):
        segment_everything(plain, rgb((40, 50)), AutoParams(method="ais"))
    decoder = decoders.get(with_decoder)
    assert decoder is not None and decoders.get(with_decoder) is decoder
    labels = segment_everything(with_decoder, rgb((40, 50)),
                                AutoParams(method="auto", foreground_threshold=0.0), decoder)
    _check_labels(labels, (40, 50))


@pytest.mark.slow
def test_a_block_is_segmented_in_3d(plain):
    image = np.stack([rgb((40, 44), seed=s) for s in range(3)])
    labels = segment_everything(plain, image, AutoParams(method="amg", **LOOSE))
    _check_labels(labels, (3, 40, 44))


@pytest.mark.parametrize("body, match", [
    ({"method": "everything"}, "method"), ({"pred_iou_thresh": 2}, r"\[0, 1\]"),
    ({"points_per_side": 0}, "points_per_side"), ({"colour": 1}, "unknown"),
    ({"min_size": "big"}, "number"),
])
def test_bad_parameters_are_refused(body, match):
    with pytest.raises(InvalidRequestError, match=match):
        AutoParams.from_json(body)


def test_objects_of_gives_each_label_its_box():
    labels = np.zeros((2, 5, 6), dtype=np.uint32)
    labels[0, 1:3, 2:5] = 1
    labels[1, 4, 0] = 3
    objects = objects_of(labels)
    assert [box for box, _ in objects] == [Box((0, 1, 2), (1, 3, 5)), Box((1, 4, 0), (2, 5, 1))]
    assert all(mask.all() for _, mask in objects)


@pytest.mark.parametrize("plane, index, depth", [("xy", 2, 1), ("yz", 10, 2)])
def test_service_adds_the_objects_to_an_instance_store(make_service, volume, plane, index,
                                                       depth):
    service = make_service()
    store = InstanceStore(volume.base.shape)

    def sink(objects):
        return [store.add(box, mask) for box, mask in objects]

    region = Box((1, 3), (5, 40)) if plane == "yz" else None
    task = service.segment_automatic(volume.base, "layer:blobs", plane, index, depth=depth,
                                     region=region, params=AutoParams(method="amg", **LOOSE),
                                     sink=sink)
    assert task.wait(300), task.to_json()
    assert task.state == "done", task.to_json()
    result = task.result
    assert result["method"] == "amg" and result["objects"] == len(result["object_ids"]) >= 1
    assert store.object_ids == result["object_ids"]
    everything = store.read(Box.from_shape(volume.base.shape))
    covered = np.argwhere(everything > 0)
    if plane == "xy":
        assert set(covered[:, 0]) == {index}
    else:  # x is the normal; rows z, columns y inside the region
        assert set(covered[:, 2]) <= set(range(index, index + depth))
        assert covered[:, 0].min() >= 1 and covered[:, 0].max() < 5
        assert covered[:, 1].min() >= 3 and covered[:, 1].max() < 40
