"""Labels as outlines: each plane outlines what it cuts; values and borders kept."""

import numpy as np
import pytest

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.labels.outline import OutlineVolume, outline_2d, outline_pyramid, plane_of
from ilastik_web.sources.array import ArrayVolume


def _disk(shape=(5, 20, 20), z=2, centre=(10, 10), radius=5, value=3):
    labels = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    labels[z][(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2] = value
    return labels


def test_outline_keeps_the_rim_of_a_region_with_its_value():
    labels = _disk()
    out = outline_2d(labels, (1, 2))
    assert out.dtype == np.uint8
    assert out[2, 10, 10] == 0  # the middle is gone
    assert out[2, 10, 5] == 3 and out[2, 5, 10] == 3 and out[2, 10, 15] == 3  # the rim stays
    assert set(np.unique(out)) == {0, 3}
    assert np.all(out[labels == 0] == 0)  # nothing drawn outside the labels
    # every kept voxel has an in-plane neighbour of another value, no dropped one has
    padded = np.pad(labels, 1, mode="edge")
    differs = np.zeros(labels.shape, bool)
    for axis in (1, 2):
        for step in (-1, 1):
            differs |= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1] != labels
    np.testing.assert_array_equal(out != 0, (labels != 0) & differs)


def test_two_classes_touching_both_get_a_border_and_edges_of_the_data_do_not():
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, :, :3] = 1
    labels[0, :, 3:] = 2
    out = outline_2d(labels, (1, 2))
    np.testing.assert_array_equal(out[0, :, 2], 1)
    np.testing.assert_array_equal(out[0, :, 3], 2)
    assert not out[0, :, [0, 1, 4, 5]].any()  # the data's own edge is no border


@pytest.mark.parametrize("box,plane", [(Box((2, 0, 0), (3, 20, 20)), (1, 2)),
                                       (Box((0, 10, 0), (5, 11, 20)), (0, 2)),
                                       (Box((0, 0, 10), (5, 20, 11)), (0, 1)),
                                       (Box((0, 0, 0), (5, 20, 20)), (1, 2))])
def test_each_chunk_orientation_is_outlined_in_its_own_plane(box, plane):
    assert plane_of(box) == plane
    labels = _disk()
    volume = OutlineVolume(ArrayVolume(labels[None], voxel_size=(1.0, 1.0, 1.0),
                                       chunk_shape=(5, 20, 20)))
    got = volume.read(box)[0]
    np.testing.assert_array_equal(got, outline_2d(labels, plane)[box.slices])


def test_chunks_see_across_their_edges():
    labels = _disk()
    volume = OutlineVolume(ArrayVolume(labels[None], voxel_size=(1.0, 1.0, 1.0),
                                       chunk_shape=(1, 8, 8)))
    whole = outline_2d(labels, (1, 2))
    tiles = np.zeros_like(labels)
    for y0 in range(0, 20, 8):
        for x0 in range(0, 20, 8):
            box = Box((2, y0, x0), (3, min(y0 + 8, 20), min(x0 + 8, 20)))
            tiles[box.slices] = volume.read(box)[0]
    np.testing.assert_array_equal(tiles[2], whole[2])  # no seams at the chunk edges


def test_a_flat_stroke_seen_from_the_side_is_a_line():
    labels = _disk()
    side = OutlineVolume(ArrayVolume(labels[None], voxel_size=(1.0, 1.0, 1.0),
                                     chunk_shape=(5, 20, 20))).read(Box((0, 10, 0), (5, 11, 20)))
    np.testing.assert_array_equal(side[0, :, 0], labels[:, 10])  # the whole cut shows


def test_pyramid_levels_are_outlined():
    labels = _disk()
    level = ArrayVolume(labels[None], voxel_size=(1.0, 1.0, 1.0), chunk_shape=(5, 20, 20))
    pyramid = outline_pyramid(MultiscaleVolume("labels", [level]))
    assert pyramid.base.key == f"{level.key}/outline" and pyramid.base.shape == level.shape
