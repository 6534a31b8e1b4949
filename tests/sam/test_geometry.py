"""Slices, coordinate mapping for every plane, tiling, and mask encodings."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError, OutOfBoundsError
from ilastik_web.sam.encoding import (
    decode_rle,
    encode_rle,
    mask_polygons,
    polygons_contain,
    ring_area,
)
from ilastik_web.sam.geometry import SliceRef, slice_index_of, tile_for, tiles_of

SHAPE = (7, 11, 13)  # z, y, x


@pytest.mark.parametrize("plane, image_shape", [("xy", (11, 13)), ("xz", (7, 13)),
                                                ("yz", (7, 11))])
def test_slice_image_axes_and_points(plane, image_shape):
    data = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    ref = SliceRef(SHAPE, plane, 4)
    assert ref.image_shape == image_shape
    image = ref.to_image(data[ref.box.slices])
    assert image.shape == image_shape
    # A viewer point at a voxel centre lands on that voxel's pixel of the slice image.
    z, y, x = 4 if plane == "xy" else 2, 4 if plane == "xz" else 5, 4 if plane == "yz" else 6
    (c, r), = ref.to_pixels([[x + 0.5, y + 0.5, z + 0.5]])
    assert image[int(np.floor(r)), int(np.floor(c))] == data[z, y, x]
    back = ref.to_viewer([[c, r]])[0]
    np.testing.assert_allclose(back, [x + 0.5, y + 0.5, z + 0.5])
    assert slice_index_of([[x + 0.5, y + 0.5, z + 0.5]], plane) == 4
    # An image box maps to the voxels it covers.
    image_box = Box((1, 2), (3, 5))
    zyx = ref.box_of(image_box)
    assert zyx.shape[ref.normal] == 1 and zyx.start[ref.normal] == 4
    np.testing.assert_array_equal(ref.to_image(data[zyx.slices]), image[image_box.slices])


def test_slice_outside_is_refused():
    with pytest.raises(OutOfBoundsError):
        SliceRef(SHAPE, "xz", 11)
    with pytest.raises(InvalidRequestError):
        SliceRef(SHAPE, "3d", 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape, tile, halo", [((40, 50), 64, 8), ((100, 37), 32, 4),
                                               ((65, 200), 64, 16)])
def test_tiles_partition_the_image(shape, tile, halo):
    tiles = tiles_of(shape, tile, halo)
    owner = np.zeros(shape, dtype=int)
    for t in tiles:
        owner[t.inner.slices] += 1
        assert t.outer.contains(t.inner)
        assert max(t.outer.shape) <= tile
        assert Box.from_shape(shape).contains(t.outer)
    assert (owner == 1).all()
    rng = np.random.default_rng(0)
    for c, r in rng.uniform(0, 1, (20, 2)) * np.array([shape[1], shape[0]]):
        index = tile_for(tiles, (c, r))
        assert tiles[index].inner.contains(Box((int(r), int(c)), (int(r) + 1, int(c) + 1)))


def test_too_large_halo_is_refused():
    with pytest.raises(InvalidRequestError):
        tiles_of((100, 100), 16, 8)


@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trip(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.random()
    counts = encode_rle(mask)
    assert sum(counts) == mask.size
    np.testing.assert_array_equal(decode_rle(counts, mask.shape), mask)


def test_rle_starts_with_a_zero_run_and_checks_sizes():
    assert encode_rle(np.array([[True, True, False]])) == [0, 2, 1]
    with pytest.raises(InvalidRequestError):
        decode_rle([1, 2], (2, 2))


def _blobby(seed: int) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random((24, 31)), 1.5) > 0.5
    mask[10:14, 10:14] = False  # holes and islands
    mask[11:13, 11:13] = True
    return mask


@pytest.mark.parametrize("seed", range(5))
def test_polygons_reproduce_the_mask_at_pixel_centres(seed):
    mask = _blobby(seed)
    rings = mask_polygons(mask)
    rows, cols = np.indices(mask.shape)
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = polygons_contain(rings, centres).reshape(mask.shape)
    np.testing.assert_array_equal(inside, mask)
    # Every vertex lies within the image's closed extent, and the areas are close.
    for ring in rings:
        assert (ring >= 0).all() and (ring[:, 0] <= mask.shape[1]).all()
    # Rings are consistently oriented (holes opposite), so signed areas add up to the
    # mask's area less at most 1/8 pixel per cut corner.
    area = abs(sum(ring_area(r) for r in rings))
    assert area <= mask.sum()
    assert abs(area - mask.sum()) <= 0.5 * sum(len(r) for r in rings)


def test_polygon_of_a_square_is_its_diamond_cut_outline():
    mask = np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True  # rows 1..3, columns 2..4
    (ring,) = mask_polygons(mask)
    assert len(ring) == 8  # four edges and four cut corners, collinear points dropped
    assert ring[:, 0].min() == 2.0 and ring[:, 0].max() == 5.0
    assert ring[:, 1].min() == 1.0 and ring[:, 1].max() == 4.0
    assert abs(ring_area(ring)) == pytest.approx(9 - 4 * 0.125)
    assert mask_polygons(np.zeros((3, 3), bool)) == []
    assert Box.of_mask(mask) == Box((1, 2), (4, 5))
