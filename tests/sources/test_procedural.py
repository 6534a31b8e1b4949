"""The procedural terabyte source: size, determinism, block independence, its pyramid."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import SourceError
from ilastik_web.pyramid import downsample_mean
from ilastik_web.sources import open_source


def test_default_is_terabytes_with_a_full_pyramid():
    pyramid = open_source("procedural:")
    base = pyramid.base
    assert base.shape == (16384, 65536, 65536)
    assert np.prod(base.shape, dtype=np.float64) * base.dtype.itemsize > 5e12
    assert max(pyramid.levels[-1].shape) <= 64
    assert pyramid.factors(len(pyramid) - 1) == (2 ** (len(pyramid) - 1),) * 3
    assert base.chunk_shape == (64, 64, 64)
    far = Box((16384 - 40, 65536 - 50, 65536 - 30), (16384, 65536, 65536))
    values = base.read(far)
    assert values.shape == (1, 40, 50, 30) and values.std() > 5
    coarsest = pyramid.levels[-1]
    assert coarsest.read(coarsest.bounds).shape == (1, *coarsest.shape)


def test_deterministic_and_seeded():
    box = Box((100, 2000, 3000), (120, 2040, 3050))
    first = open_source("procedural:seed=3").base.read(box)
    again = open_source("procedural:seed=3").base.read(box)
    other = open_source("procedural:seed=4").base.read(box)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    keys = {level.key for level in open_source("procedural:seed=3").levels}
    assert keys.isdisjoint(level.key for level in open_source("procedural:seed=4").levels)


@pytest.mark.parametrize("level", [0, 2, 6])
def test_a_voxel_does_not_depend_on_the_box_that_reads_it(level):
    volume = open_source("procedural:shape=512x4096x4096").levels[level]
    outer = Box((0, 0, 0), tuple(min(48, s) for s in volume.shape))
    inner = Box((3, 5, 7), tuple(min(30, s) for s in volume.shape))
    np.testing.assert_array_equal(
        volume.read(outer)[(slice(None), *inner.relative_to(outer))], volume.read(inner)
    )


@pytest.mark.parametrize("level", [0, 1, 2])
def test_coarser_level_resembles_a_downsample(level):
    pyramid = open_source("procedural:shape=2048x4096x4096,seed=1")
    fine = pyramid.levels[level].read(Box((256, 512, 512), (320, 640, 640)))
    coarse = pyramid.levels[level + 1].read(Box((128, 256, 256), (160, 320, 320)))
    downsampled = downsample_mean(fine, (2, 2, 2)).astype(np.float64)
    correlation = np.corrcoef(downsampled.ravel(), coarse.astype(np.float64).ravel())[0, 1]
    assert correlation > 0.9
    assert abs(downsampled.mean() - coarse.mean()) < 5


@pytest.mark.parametrize(
    "location",
    ["procedural:shape=1x2", "procedural:size=3", "procedural:seed=x", "procedural:cell=1"],
)
def test_bad_parameters_are_one_line_errors(location):
    with pytest.raises(SourceError, match="bad procedural parameters"):
        open_source(location)
