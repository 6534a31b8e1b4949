"""A block computed from a read grown by ``required_halo`` equals the whole-image result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import filters

SCALES = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0)


def _assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> None:
    axes = tuple(range(1, expected.ndim))
    spread = expected.max(axis=axes) - expected.min(axis=axes)
    scale = np.maximum(np.maximum(spread, np.abs(expected).max(axis=axes)), 1e-12)
    error = (np.abs(actual.astype(np.float64) - expected).max(axis=axes)) / scale
    assert error.max() <= rtol, f"relative errors per channel: {error}"


def _block_from_read(
    image: np.ndarray, block: tuple[slice, ...], selection, ndim: int, voxel_size=None
) -> np.ndarray:
    halo = filters.required_halo(selection, ndim=ndim, voxel_size=voxel_size)
    spatial = image.shape[1:]
    read = tuple(
        slice(max(0, b.start - h), min(n, b.stop + h))
        for b, h, n in zip(block, halo, spatial, strict=True)
    )
    features = filters.compute_features(
        image[(slice(None), *read)], selection, ndim=ndim, voxel_size=voxel_size
    )
    inner = tuple(
        slice(b.start - r.start, b.stop - r.start) for b, r in zip(block, read, strict=True)
    )
    return features[(slice(None), *inner)]


@st.composite
def _cases(draw: st.DrawFn, ndim: int):
    shape = tuple(draw(st.integers(3, 36)) for _ in range(ndim))
    block = []
    for n in shape:
        start = draw(st.sampled_from([0, draw(st.integers(0, n - 1))]))
        stop = draw(st.sampled_from([n, draw(st.integers(start + 1, n))]))
        block.append(slice(start, stop))
    features = draw(
        st.lists(
            st.tuples(
                st.sampled_from(filters.FEATURE_IDS),
                st.sampled_from(SCALES),
                st.booleans() if ndim == 3 else st.just(False),
            ),
            min_size=1,
            max_size=4,
        )
    )
    anisotropic = draw(st.booleans())
    voxel_size = tuple(draw(st.sampled_from([1.0, 2.0, 3.5])) for _ in range(ndim))
    seed = draw(st.integers(0, 2**16))
    return shape, tuple(block), features, voxel_size if anisotropic else None, seed


@pytest.mark.parametrize("ndim", [2, 3])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_block_equals_whole_image(ndim: int, data: st.DataObject) -> None:
    shape, block, selection, voxel_size, seed = data.draw(_cases(ndim))
    image = np.random.default_rng(seed).random((1, *shape), dtype=np.float32) * 100
    whole = filters.compute_features(image, selection, ndim=ndim, voxel_size=voxel_size)
    part = _block_from_read(image, block, selection, ndim, voxel_size)
    _assert_close(part, whole[(slice(None), *block)])


def _edge_blocks(shape: tuple[int, ...], size: int) -> list[tuple[slice, ...]]:
    """Blocks touching each face of the image, its corners and its middle."""
    choices = [
        [slice(0, size), slice(n - size, n), slice((n - size) // 2, (n + size) // 2)] for n in shape
    ]
    rng = np.random.default_rng(3)
    blocks = [tuple(c[0] for c in choices), tuple(c[1] for c in choices)]
    for axis in range(len(shape)):
        for side in (0, 1):
            block = [c[2] for c in choices]
            block[axis] = choices[axis][side]
            blocks.append(tuple(block))
    blocks.append(tuple(c[rng.integers(3)] for c in choices))
    return blocks


def _every_feature(max_sigma: float) -> list[filters.FeatureSpec]:
    return [spec for spec in filters.default_selection() if spec.sigma <= max_sigma]


@pytest.mark.parametrize(("ndim", "max_sigma"), [(2, 10.0), (3, 3.5)])
def test_blocks_on_every_edge_with_every_feature(ndim: int, max_sigma: float) -> None:
    shape = (40, 53, 47)[-ndim:]
    selection = _every_feature(max_sigma)
    if ndim == 3:
        selection.append(filters.FeatureSpec("HessianOfGaussianEigenvalues", 5.0, in_2d=True))
    image = np.random.default_rng(ndim).random((2, *shape), dtype=np.float32)
    whole = filters.compute_features(image, selection, ndim=ndim)
    for block in _edge_blocks(shape, 13):
        expected = whole[(slice(None), *block)]
        _assert_close(_block_from_read(image, block, selection, ndim), expected)


@pytest.mark.parametrize(("ndim", "tile"), [(3, (7, 9, 11)), (3, (64, 5, 64)), (2, (10, 13))])
def test_internal_tiling_does_not_change_values(ndim: int, tile: tuple[int, ...]) -> None:
    shape = (30, 41, 37)[-ndim:]
    image = np.random.default_rng(7).random((1, *shape), dtype=np.float32)
    selection = _every_feature(10.0 if ndim == 2 else 1.6)
    selection.append(filters.FeatureSpec("StructureTensorEigenvalues", 3.5, in_2d=True))
    whole = filters.compute_features(image, selection, ndim=ndim)
    tiled = filters.compute_features(image, selection, ndim=ndim, tile_shape=tile)
    _assert_close(tiled, whole)


@pytest.mark.parametrize("ndim", [2, 3])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_region_equals_the_whole_image_cropped(ndim: int, data: st.DataObject) -> None:
    shape, block, selection, voxel_size, seed = data.draw(_cases(ndim))
    image = np.random.default_rng(seed).random((1, *shape), dtype=np.float32) * 100
    whole = filters.compute_features(image, selection, ndim=ndim, voxel_size=voxel_size)
    region = [(b.start, b.stop) for b in block]
    part = filters.compute_features(image, selection, ndim=ndim, voxel_size=voxel_size,
                                    region=region)
    assert part.shape == whole[(slice(None), *block)].shape
    _assert_close(part, whole[(slice(None), *block)])


def test_one_plane_of_a_read_with_its_halo_on_every_edge() -> None:
    """The feature computer's use: read a block with its halo, compute only the block."""
    shape = (40, 53, 47)
    selection = _every_feature(3.5)
    image = np.random.default_rng(5).random((2, *shape), dtype=np.float32)
    whole = filters.compute_features(image, selection, ndim=3)
    halo = filters.required_halo(selection, ndim=3)
    for z in (0, 3, 20, 39):
        block = (slice(z, z + 1), slice(0, 30), slice(17, 47))
        read = tuple(slice(max(0, b.start - h), min(n, b.stop + h))
                     for b, h, n in zip(block, halo, shape, strict=True))
        region = [(b.start - r.start, b.stop - r.start) for b, r in zip(block, read, strict=True)]
        part = filters.compute_features(image[(slice(None), *read)], selection, ndim=3,
                                        region=region)
        _assert_close(part, whole[(slice(None), *block)])


@pytest.mark.parametrize("region", [[(0, 0), (0, 4)], [(0, 5), (0, 4)], [(0, 2)],
                                    [(-1, 2), (0, 4)]])
def test_a_region_outside_the_image_is_refused(region) -> None:
    with pytest.raises(ValueError, match="region"):
        filters.compute_features(np.zeros((1, 4, 4), np.float32), [("GaussianSmoothing", 1.0)],
                                 ndim=2, region=region)
