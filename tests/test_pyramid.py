"""build_pyramid: exact mean/mode on odd shapes, anisotropy, block-wise reads."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.cache import ArrayCache
from ilastik_web.pyramid import build_pyramid, downsample_mean, downsample_mode, pyramid_factors
from ilastik_web.sources import ArrayVolume


class CountingVolume(ArrayVolume):
    """An ArrayVolume that records every box read from it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.boxes: list[Box] = []
        self._lock = threading.Lock()

    def _read(self, box):
        with self._lock:
            self.boxes.append(box)
        return super()._read(box)


def reference_downsample(data: np.ndarray, factors, reduce) -> np.ndarray:
    """Per output voxel, ``reduce`` over the input voxels it covers (slow, obvious)."""
    c, *shape = data.shape
    out_shape = [-(-s // f) for s, f in zip(shape, factors, strict=True)]
    out = np.empty((c, *out_shape), data.dtype)
    for index in itertools.product(*(range(n) for n in out_shape)):
        region = tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors, strict=True))
        for channel in range(c):
            out[(channel, *index)] = reduce(data[(channel, *region)].ravel())
    return out


def mode_smallest(values: np.ndarray):
    uniques, counts = np.unique(values, return_counts=True)
    return uniques[np.argmax(counts)]  # uniques are sorted: ties go to the smallest


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 2, 2), (2, 1, 2)])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_mean_equals_reference_on_odd_shapes(factors, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((2, 5, 7, 9)) * 200).astype(dtype)
    got = downsample_mean(data, factors)
    expected = reference_downsample(data.astype(np.float64), factors, np.mean)
    if np.dtype(dtype).kind == "u":
        expected = np.rint(expected)
    np.testing.assert_allclose(got, expected.astype(dtype), rtol=1e-6)
    assert got.dtype == data.dtype


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 2, 2)])
def test_mode_equals_reference_on_odd_shapes(factors):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4, (1, 7, 5, 9)).astype(np.uint8)
    np.testing.assert_array_equal(
        downsample_mode(data, factors), reference_downsample(data, factors, mode_smallest)
    )


def test_factors_respect_anisotropy_and_min_size():
    # z voxels 4x larger: x/y are halved until isotropic, then all axes together.
    steps = pyramid_factors((40, 1000, 1000), (40.0, 10.0, 10.0), min_size=64)
    assert steps[:2] == [(1, 2, 2), (1, 2, 2)]
    assert steps[2] == (2, 2, 2)
    shape = np.array((40, 1000, 1000))
    for step in steps:
        shape = -(-shape // np.array(step))
    assert shape.max() <= 64
    # 2D: z stays 1.
    assert all(s[0] == 1 for s in pyramid_factors((1, 300, 200), (1.0, 1.0, 1.0), 64))


@pytest.mark.parametrize("method", ["mean", "mode"])
def test_pyramid_levels_equal_iterated_reference(method):
    rng = np.random.default_rng(2)
    if method == "mean":
        data = rng.integers(0, 60000, (1, 37, 75, 131)).astype(np.uint16)
    else:
        data = rng.integers(1, 5, (1, 37, 75, 131)).astype(np.uint8)
    base = ArrayVolume(data, voxel_size=(2.0, 1.0, 1.0), chunk_shape=(16, 32, 32))
    pyramid = build_pyramid(base, cache=ArrayCache(2**26), name="p", method=method, min_size=16)
    reduce = downsample_mean if method == "mean" else downsample_mode
    expected = data
    for index, level in enumerate(pyramid.levels[1:], start=1):
        step = tuple(
            a // b for a, b in zip(pyramid.factors(index), pyramid.factors(index - 1), strict=True)
        )
        expected = reduce(expected, step)
        np.testing.assert_array_equal(level.read(level.bounds), expected)
        box = Box((0, 1, 2), tuple(max(1, s - 1) for s in level.shape))
        np.testing.assert_array_equal(level.read(box), expected[(slice(None), *box.slices)])
    assert pyramid.factors(1) == (1, 2, 2)  # z voxels were already twice as large
    assert max(pyramid.levels[-1].shape) <= 16


def test_coarse_read_never_reads_level0_whole():
    data = np.random.default_rng(3).integers(0, 255, (1, 256, 256, 256)).astype(np.uint8)
    base = CountingVolume(data, chunk_shape=(64, 64, 64))
    cache = ArrayCache(2**28)
    pyramid = build_pyramid(base, cache=cache, name="p")
    coarse = pyramid.levels[2]  # 64³, one block
    coarse.read(Box((0, 0, 0), (16, 16, 16)))
    read_voxels = sum(b.size for b in base.boxes)
    assert max(b.size for b in base.boxes) <= 128**3  # never more than one level-1 block
    assert read_voxels == 256**3  # each level-0 voxel read once for a whole coarse block
    # The same block again comes from the cache: no new level-0 reads.
    base.boxes.clear()
    coarse.read(Box((10, 10, 10), (40, 40, 40)))
    assert base.boxes == []
    # A level-1 block reads only its own level-0 footprint.
    cache.clear()
    base.boxes.clear()
    pyramid.levels[1].read(Box((64, 0, 0), (70, 10, 10)))
    assert [b.shape for b in base.boxes] == [(128, 128, 128)]
    assert cache.stats.entries > 0


def test_concurrent_coarse_reads_compute_each_block_once():
    data = np.random.default_rng(4).integers(0, 255, (1, 128, 128, 128)).astype(np.uint8)
    base = CountingVolume(data, chunk_shape=(64, 64, 64))
    pyramid = build_pyramid(base, cache=ArrayCache(2**26), name="p")
    threads = [
        threading.Thread(target=pyramid.levels[-1].read, args=(pyramid.levels[-1].bounds,))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(b.size for b in base.boxes) == 128**3
