"""The service on a tiny random SAM: caches, tiling, every plane, propagation, limits.

Mask content from random weights means nothing, so these check where masks are, how
often embeddings are computed, and what the tasks and limits do.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sam_fixtures import blobs

from ilastik_web.errors import InvalidRequestError, NotFoundError, TooManyRequestsError
from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sources.array import ArrayVolume

PLANE_POINTS = {  # a point in each plane, viewer x, y, z
    "xy": ([25.5, 20.5, 3.5], 3),
    "xz": ([25.5, 20.5, 3.5], 20),
    "yz": ([25.5, 20.5, 3.5], 25),
}


@pytest.mark.parametrize("plane", ["xy", "xz", "yz"])
@pytest.mark.parametrize("tile_size", [None, 24])
def test_prompt_masks_lie_on_the_clicked_slice(make_service, volume, plane, tile_size):
    service = make_service(tile_size=tile_size, halo=4)
    point, index = PLANE_POINTS[plane]
    mask = service.prompt(volume.base, "layer:raw", plane, index, points_xyz=[point],
                          point_labels=[1])
    ref = SliceRef(volume.base.shape, plane, index)
    assert mask.box.shape[ref.normal] == 1 and mask.box.start[ref.normal] == index
    assert volume.base.bounds.contains(mask.box)
    assert mask.mask.shape == mask.box.shape and mask.mask.dtype == bool
    tiles = service.embeddings.tiles(ref, service.models.get())
    if tile_size is not None and max(ref.image_shape) > tile_size:
        assert len(tiles) > 1
        # The mask comes from the tile holding the click, not from the whole slice.
        assert ref.box_of(tiles[mask.tile].outer) == mask.box
    encoded = mask.to_json()
    (entry,) = encoded["slices"]
    assert entry["index"] == index and entry["pixels"] == mask.voxel_count()
    if entry["pixels"]:
        assert sum(entry["rle"]) == entry["shape"][0] * entry["shape"][1]
        axis = 2 - ref.normal  # normal axis in x, y, z order
        for ring in entry["polygons_xyz"]:
            assert {p[axis] for p in ring} == {index + 0.5}


def test_embeddings_are_computed_once_even_when_asked_together(make_service, volume):
    service = make_service()
    model = service.models.get()
    ref = SliceRef(volume.base.shape, "xy", 2)
    results = []

    def ask() -> None:
        results.append(service.embeddings.get(volume.base, ref, model))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert service.embeddings.stats.computed == 1
    assert sum(r.computed for r in results) == 1
    assert all(r.features is results[0].features for r in results)
    service.prompt(volume.base, "layer:raw", "xy", 2, points_xyz=[[10, 10, 2.5]],
                   point_labels=[1])
    assert service.embeddings.stats.computed == 1


def test_disk_cache_is_keyed_by_content_and_model(make_service, volume, tmp_path,
                                                  tiny_microsam_checkpoint):
    first = make_service(embedding_dir=tmp_path)
    ref = SliceRef(volume.base.shape, "xz", 7)
    a = first.embeddings.get(volume.base, ref, first.models.get())
    assert a.computed
    # A new service (a restart) and another volume with the same pixels: read from disk.
    second = make_service(embedding_dir=tmp_path)
    same_pixels = ArrayVolume(blobs((6, 40, 50)), (40.0, 4.0, 4.0), key="copy")
    b = second.embeddings.get(same_pixels, ref, second.models.get())
    assert not b.computed and second.embeddings.stats.disk_hits == 1
    np.testing.assert_array_equal(a.features, b.features)
    # Other pixels, or another checkpoint file: computed again.
    other = ArrayVolume(blobs((6, 40, 50), seed=1), (40.0, 4.0, 4.0), key="other")
    assert second.embeddings.get(other, ref, second.models.get()).computed
    from ilastik_web.sam import ModelSpec

    third = make_service(embedding_dir=tmp_path,
                         models=(ModelSpec("lm", "vit_b_lm", tiny_microsam_checkpoint),))
    assert third.embeddings.get(volume.base, ref, third.models.get()).computed


def test_refining_with_the_previous_mask(make_service, volume):
    service = make_service()
    first = service.prompt(volume.base, "layer:raw", "xy", 3, points_xyz=[[25.5, 20.5, 3.5]],
                           point_labels=[1])
    refined = service.prompt(volume.base, "layer:raw", "xy", 3,
                             points_xyz=[[25.5, 20.5, 3.5], [5.5, 5.5, 3.5]],
                             point_labels=[1, 0], previous_mask_id=first.mask_id)
    assert refined.mask_id != first.mask_id
    with pytest.raises(InvalidRequestError, match="another slice"):
        service.prompt(volume.base, "layer:raw", "xy", 4, points_xyz=[[25.5, 20.5, 4.5]],
                       point_labels=[1], previous_mask_id=first.mask_id)


@pytest.mark.parametrize("kwargs", [
    {},
    {"points_xyz": [[1, 2, 3.5]], "point_labels": [2]},
    {"points_xyz": [[1, 2, 3.5]], "point_labels": []},
    {"box_xyz": [[5, 5, 3], [5, 9, 4]]},
    {"points_xyz": [[1, 2]]},
])
def test_malformed_prompts(make_service, volume, kwargs):
    service = make_service()
    with pytest.raises(InvalidRequestError):
        service.prompt(volume.base, "layer:raw", "xy", 3, **kwargs)


def test_propagation_builds_a_3d_preview(make_service, volume):
    service = make_service()
    seed = service.prompt(volume.base, "layer:raw", "xy", 3,
                          box_xyz=[[15, 10, 3], [40, 35, 4]])
    if not seed.mask.any():  # random weights: force a non-empty seed mask
        seed.mask[..., 10:20, 15:30] = True
    task = service.propagate(volume.base, seed.mask_id, lower=1, upper=5, iou_threshold=0.0)
    assert task.wait(60), task.to_json()
    assert task.state == "done", task.error
    result = service.masks.get(task.result["mask_id"])
    slices = task.result["slices"]
    assert result.kind == "propagated" and 3 in slices
    assert set(slices) <= set(range(1, 6)) and slices == list(range(slices[0], slices[-1] + 1))
    assert result.box.start[0] == slices[0] and result.box.stop[0] == slices[-1] + 1
    np.testing.assert_array_equal(result.mask[3 - slices[0]][
        tuple(slice(a - b, c - b) for a, b, c in zip(seed.box.start[1:], result.box.start[1:],
                                                      seed.box.stop[1:], strict=True))
    ], seed.mask[0])
    assert task.progress == 1.0
    assert [s["index"] for s in result.to_json()["slices"]] == slices


def test_precompute_task_reports_progress_and_fills_the_cache(make_service, volume):
    service = make_service()
    task = service.precompute(volume.base, "layer:raw", "yz", 10, 14)
    assert task.wait(60) and task.state == "done"
    assert task.result == {"slices": 4, "computed": 4}
    model = service.models.get()
    assert all(service.embeddings.cached(volume.base, SliceRef(volume.base.shape, "yz", i),
                                         model) for i in range(10, 14))
    with pytest.raises(InvalidRequestError):
        service.precompute(volume.base, "layer:raw", "yz", 5, 5)


def test_limits_answer_busy(make_service, volume):
    service = make_service(max_active_prompts=1, max_pending_tasks=1, task_workers=1)
    with service.admit_prompt():
        with pytest.raises(TooManyRequestsError):
            service.admit_prompt()
    with service.admit_prompt():  # the slot came back
        pass
    gate = threading.Event()
    blocker = service.tasks.submit("block", {}, lambda task: gate.wait(10) and {})
    with pytest.raises(TooManyRequestsError):
        service.precompute(volume.base, "layer:raw", "xy", 0, 1)
    service.tasks.cancel(blocker.task_id)
    gate.set()
    assert blocker.wait(10)
    assert blocker.state == "cancelled"
    with pytest.raises(NotFoundError):
        service.tasks.get("nope")


def test_accept_into_labels_and_instances(make_service, volume):
    from ilastik_web.project import Project
    from ilastik_web.sam.instances import InstanceStore

    service = make_service()
    project = Project(None, volume)
    project.add_class("cell")
    mask = service.prompt(volume.base, "layer:raw", "xz", 20, box_xyz=[[10, 20, 1], [40, 21, 5]])
    mask.mask[...] = False
    mask.mask[0, 0, :3] = True  # (z, y, x) box one voxel thick in y
    result = service.accept_to_labels(mask.mask_id, project, 1)
    assert result.revision == 1
    labels = project.labels.read(mask.box)
    np.testing.assert_array_equal(labels == 1, mask.mask)
    with pytest.raises(NotFoundError):
        service.masks.get(mask.mask_id)  # accepted masks are gone
    project.undo()
    assert not project.labels.read(mask.box).any()

    store = InstanceStore(volume.base.shape)
    again = service.prompt(volume.base, "layer:raw", "xy", 2, points_xyz=[[20, 20, 2.5]],
                           point_labels=[1])
    again.mask[...] = True
    object_id = service.accept_to_instances(again.mask_id, store)
    assert object_id == 1 and (store.read(again.box) == 1).all()
    store.remove(object_id)
    assert not store.read(again.box).any()
    project.close()
