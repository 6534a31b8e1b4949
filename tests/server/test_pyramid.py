"""Lazily computed pyramid levels."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.sources.array import ArrayVolume
from neuroglancer_ext.pyramid import (
    DownsampledVolume,
    complete_pyramid,
    downsample_array,
    next_level_factors,
)


def naive_mean(data: np.ndarray, factors) -> np.ndarray:
    c, z, y, x = data.shape
    fz, fy, fx = factors
    out = np.empty((c, -(-z // fz), -(-y // fy), -(-x // fx)))
    for k in range(out.shape[1]):
        for j in range(out.shape[2]):
            for i in range(out.shape[3]):
                block = data[:, k * fz:(k + 1) * fz, j * fy:(j + 1) * fy, i * fx:(i + 1) * fx]
                out[:, k, j, i] = block.reshape(c, -1).mean(axis=1)
    return out


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 2), (2, 1, 3)])
def test_mean_matches_naive_including_short_edge_blocks(rng, dtype, factors):
    data = (rng.random((2, 5, 7, 9)) * 200).astype(dtype)
    got = downsample_array(data, factors, method="mean")
    expected = naive_mean(data, factors)
    if np.dtype(dtype).kind == "u":
        expected = np.rint(expected)
    assert got.dtype == data.dtype
    np.testing.assert_allclose(got, expected.astype(dtype), rtol=1e-6)


def test_subsample_keeps_label_values(rng):
    labels = rng.integers(0, 5, size=(1, 4, 6, 7), dtype=np.uint8)
    got = downsample_array(labels, (2, 2, 2), method="subsample")
    np.testing.assert_array_equal(got, labels[:, ::2, ::2, ::2])


def test_downsampled_volume_reads_equal_whole_array_downsampling(rng):
    data = rng.integers(0, 255, size=(1, 9, 150, 131), dtype=np.uint8)
    parent = ArrayVolume(data, (10.0, 5.0, 5.0))
    cache = ArrayCache(2**24)
    level = DownsampledVolume(parent, (1, 2, 2), cache=cache, block_shape=(4, 32, 32))
    assert level.shape == (9, 75, 66)
    assert level.voxel_size == (10.0, 10.0, 10.0)
    expected = downsample_array(data, (1, 2, 2))
    box = Box((3, 10, 20), (9, 75, 66))
    np.testing.assert_array_equal(level.read(box), expected[(slice(None), *box.slices)])
    misses = cache.stats.misses
    level.read(box)
    assert cache.stats.misses == misses  # second read served from cached blocks


def test_anisotropic_volumes_become_isotropic_first():
    assert next_level_factors((50, 1000, 1000), (40.0, 4.0, 4.0)) == (1, 2, 2)
    assert next_level_factors((50, 1000, 1000), (40.0, 32.0, 32.0)) == (2, 2, 2)
    assert next_level_factors((1, 1000, 1000), (1.0, 1.0, 1.0)) == (1, 2, 2)
    assert next_level_factors((1, 1, 1), (1.0, 1.0, 1.0)) is None


def test_complete_pyramid_keeps_native_levels_and_stops_small(rng):
    data = rng.integers(0, 255, size=(1, 3, 600, 500), dtype=np.uint8)
    native = MultiscaleVolume("v", [ArrayVolume(data, (40, 4, 4))])
    full = complete_pyramid(native, cache=ArrayCache(2**24))
    assert full.levels[0] is native.levels[0]
    assert [lv.shape for lv in full.levels] == [
        (3, 600, 500), (3, 300, 250), (3, 150, 125), (3, 75, 63)
    ]
    small = MultiscaleVolume("s", [ArrayVolume(data[:, :, :100, :100], (40, 4, 4))])
    assert complete_pyramid(small) is small
