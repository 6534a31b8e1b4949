"""Our 3D propagation and micro-sam's ``segment_mask_in_volume`` give the same masks when
fed the same model and embeddings (benchmarks/sam_propagation.py compares them further)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam_fixtures import blobs, build_tiny_sam

from ilastik_web.sam import ModelSpec, load_model
from ilastik_web.sam.embeddings import EmbeddingStore
from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sam.propagation import iou, propagate
from ilastik_web.sources.array import ArrayVolume

mds = pytest.importorskip("micro_sam.multi_dimensional_segmentation")


@pytest.fixture(scope="module")
def model_1024(tmp_path_factory):
    # micro-sam assumes 1024-pixel model inputs (its mask prompts are 256²).
    path = tmp_path_factory.mktemp("sam") / "tiny1024.pt"
    torch.save(build_tiny_sam(image_size=1024).state_dict(), path)
    return load_model(ModelSpec("tiny1024", "vit_b", path), device="cpu")


@pytest.mark.parametrize("projection", ["mask", "box"])
def test_same_masks_as_micro_sam(model_1024, projection):
    data = blobs((4, 48, 56), seed=2)
    volume = ArrayVolume(data, (1.0, 1.0, 1.0), key="blobs-vs-microsam")
    store = EmbeddingStore()
    start = SliceRef(volume.shape, "xy", 1)
    start_mask = np.zeros(start.image_shape, dtype=bool)
    start_mask[10:30, 12:40] = True

    ours = propagate(volume, store, model_1024, start, start_mask, lower=0, upper=3,
                     iou_threshold=0.0, projection=projection)

    refs = [start.with_index(z) for z in range(4)]
    predictor = model_1024.predictor()
    embeddings = {
        "features": np.stack([store.get(volume, ref, model_1024).features for ref in refs]),
        "original_size": start.image_shape,
        "input_size": predictor.transform.get_preprocess_shape(*start.image_shape, 1024),
    }
    segmentation = np.zeros(volume.shape, dtype=np.uint32)
    segmentation[1] = start_mask
    theirs, _ = mds.segment_mask_in_volume(
        segmentation, predictor, embeddings, np.array([1]), stop_lower=False,
        stop_upper=False, iou_threshold=0.0, projection=projection)

    assert sorted(ours.masks) == [0, 1, 2, 3]
    np.testing.assert_array_equal(ours.masks[1], theirs[1] > 0)
    for z in (0, 2, 3):
        if projection == "box":
            np.testing.assert_array_equal(ours.masks[z], theirs[z] > 0, err_msg=f"slice {z}")
        else:  # the mask prompt is resampled to 256² slightly differently (antialiasing)
            assert iou(ours.masks[z], theirs[z] > 0) > 0.95, f"slice {z}"
