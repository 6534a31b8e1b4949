"""One contract every kind of LazyVolume passes: sources, procedural, downsampled,
predictions, labels and instances.

Each kind is built small by a factory that also returns, where one exists, the expected
voxels computed another way (the written array, the painted mask, numpy's block means).
The contract: metadata is coherent; the whole volume reads as (channels, *shape) of the
volume's dtype, C-ordered; any box reads the same voxels as that box of the whole; reads
from several threads agree; a box outside raises OutOfBoundsError; a caller changing the
array it got never changes what later reads return.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import OutOfBoundsError

SHAPE = (9, 37, 45)  # (z, y, x): not a multiple of any block shape used below


def _data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(1, *SHAPE), endpoint=True).astype(np.uint8)


def source_kind(tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    import tifffile

    from ilastik_web.sources import open_source

    data = _data(1)
    tifffile.imwrite(tmp_path / "raw.tif", data[0])
    return open_source(str(tmp_path / "raw.tif"), cache=ArrayCache(1 << 24)).base, data


def array_kind(tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    from ilastik_web.sources.array import ArrayVolume

    data = _data(2)
    return ArrayVolume(data, (40.0, 8.0, 8.0), chunk_shape=(4, 16, 16)), data


def procedural_kind(tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    from ilastik_web.sources.procedural import ProceduralParams, ProceduralVolume

    return ProceduralVolume(ProceduralParams(shape=SHAPE, seed=3, cell=8, chunk=16)), None


def downsampled_kind(tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    from ilastik_web.pyramid import build_pyramid, downsample_mean
    from ilastik_web.sources.array import ArrayVolume

    data = _data(4)
    pyramid = build_pyramid(ArrayVolume(data, (8.0, 8.0, 8.0)), cache=ArrayCache(1 << 24),
                            name="d", min_size=8)
    level = pyramid.levels[1]
    return level, downsample_mean(data, pyramid.factors(1))


def _project(tmp_path):
    from ilastik_web.labels import Stroke
    from ilastik_web.project import Project
    from ilastik_web.pyramid import build_pyramid
    from ilastik_web.sources.array import ArrayVolume

    data = _data(5)
    source = build_pyramid(ArrayVolume(data, (8.0, 8.0, 8.0)), cache=ArrayCache(1 << 24),
                           name="raw", min_size=64)
    project = Project.create(None, source, classes=["a", "b"],
                             selection=[("GaussianSmoothing", 1.0)])
    project.paint(Stroke(((4.5, 5.5, 5.5), (4.5, 5.5, 30.5)), radius=2.0, label=1))
    project.paint(Stroke(((4.5, 30.5, 5.5), (4.5, 30.5, 30.5)), radius=2.0, label=2))
    return project


def predictions_kind(tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    project = _project(tmp_path)
    project.train()
    return project.current_generation().pyramids["probabilities"].levels[0], None


def labels_kind(tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    from ilastik_web.labels import LabelVolume

    project = _project(tmp_path)
    snapshot = project.labels.snapshot()
    expected = snapshot.read(Box.from_shape(SHAPE))[None]
    assert expected.any()
    return LabelVolume(snapshot, (8.0, 8.0, 8.0)), expected


def instances_kind(tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    from ilastik_web.sam.instances import InstanceStore, InstanceVolume

    store = InstanceStore(SHAPE, block_shape=(4, 16, 16))
    expected = np.zeros((1, *SHAPE), np.uint32)
    for index, box in enumerate([Box((1, 3, 4), (6, 20, 30)), Box((4, 10, 25), (9, 37, 45))]):
        mask = np.random.default_rng(index).random(box.shape) > 0.4
        object_id = store.add(box, mask)
        expected[(0, *box.slices)][mask] = object_id
    return InstanceVolume(store, (8.0, 8.0, 8.0), key="instances/test"), expected


KINDS: dict[str, Callable] = {
    "source": source_kind,
    "array": array_kind,
    "procedural": procedural_kind,
    "downsampled": downsampled_kind,
    "predictions": predictions_kind,
    "labels": labels_kind,
    "instances": instances_kind,
}


@pytest.fixture(params=sorted(KINDS))
def kind(request, tmp_path) -> tuple[LazyVolume, np.ndarray | None]:
    return KINDS[request.param](tmp_path)


def _random_boxes(shape, count: int, seed: int = 0) -> list[Box]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        start = [int(rng.integers(0, s)) for s in shape]
        stop = [int(rng.integers(a + 1, s + 1)) for a, s in zip(start, shape, strict=True)]
        boxes.append(Box(tuple(start), tuple(stop)))
    return boxes


def test_metadata_is_coherent(kind):
    volume, _ = kind
    assert len(volume.shape) == 3 and all(s >= 1 for s in volume.shape)
    assert volume.num_channels >= 1
    assert all(1 <= c for c in volume.chunk_shape) and len(volume.chunk_shape) == 3
    assert all(v > 0 for v in volume.voxel_size)
    assert isinstance(volume.key, str) and volume.key
    assert volume.bounds == Box.from_shape(volume.shape)


def test_whole_volume_reads_as_expected(kind):
    volume, expected = kind
    whole = volume.read(volume.bounds)
    assert whole.shape == (volume.num_channels, *volume.shape)
    assert whole.dtype == volume.dtype and whole.flags.c_contiguous
    if expected is not None:
        np.testing.assert_array_equal(whole, expected)


def test_any_box_reads_the_voxels_of_the_whole(kind):
    volume, _ = kind
    whole = volume.read(volume.bounds)
    for box in _random_boxes(volume.shape, 8):
        got = volume.read(box)
        assert got.flags.c_contiguous and got.dtype == volume.dtype
        np.testing.assert_array_equal(got, whole[(slice(None), *box.slices)])


def test_concurrent_reads_agree(kind):
    volume, _ = kind
    whole = volume.read(volume.bounds)
    failures: list[BaseException] = []

    def worker(box: Box) -> None:
        try:
            np.testing.assert_array_equal(volume.read(box), whole[(slice(None), *box.slices)])
        except BaseException as exc:  # re-raised in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(b,))
               for b in _random_boxes(volume.shape, 8, seed=1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]


def test_boxes_outside_raise(kind):
    volume, _ = kind
    z, y, x = volume.shape
    for box in (Box((0, 0, 0), (z, y, x + 1)), Box((-1, 0, 0), (1, 1, 1)),
                Box((z, 0, 0), (z + 1, 1, 1))):
        with pytest.raises(OutOfBoundsError):
            volume.read(box)


def test_changing_a_result_never_changes_later_reads(kind):
    volume, _ = kind
    box = Box((0, 0, 0), tuple(min(4, s) for s in volume.shape))
    first = volume.read(box)
    reference = first.copy()
    if first.flags.writeable:
        first += 1
    np.testing.assert_array_equal(volume.read(box), reference)
