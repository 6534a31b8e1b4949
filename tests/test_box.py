import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError, OutOfBoundsError


def test_shape_and_slices():
    b = Box((1, 2, 3), (4, 6, 8))
    assert b.shape == (3, 4, 5)
    assert b.size == 60
    assert b.slices == (slice(1, 4), slice(2, 6), slice(3, 8))


def test_rejects_inverted_box():
    with pytest.raises(InvalidRequestError):
        Box((2,), (1,))


def test_intersect_disjoint_is_empty():
    a = Box((0, 0), (4, 4))
    b = Box((5, 1), (9, 3))
    assert a.intersect(b).is_empty


def test_grow_then_clip_stays_inside():
    b = Box((0, 5, 9), (3, 8, 10)).grow(4).clip((5, 10, 10))
    assert b == Box((0, 1, 5), (5, 10, 10))


def test_relative_to_requires_containment():
    outer = Box((2, 2), (10, 10))
    assert Box((3, 4), (5, 6)).relative_to(outer) == (slice(1, 3), slice(2, 4))
    with pytest.raises(OutOfBoundsError):
        Box((0, 0), (3, 3)).relative_to(outer)


@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 9, 4)])
def test_chunks_tile_the_box_exactly(shape):
    box = Box((1, 0, 2), tuple(s + o for s, o in zip(shape, (1, 0, 2), strict=True)))
    cells = list(box.chunks((2, 4, 2)))
    assert sum(c.size for c in cells) == box.size
    assert all(box.contains(c) for c in cells)


def test_scaled_down_covers():
    assert Box((0, 3, 5), (1, 9, 10)).scaled_down((1, 2, 4)) == Box((0, 1, 1), (1, 5, 3))


def test_of_mask_bounds_true_elements():
    import numpy as np

    mask = np.zeros((4, 6, 5), bool)
    mask[1, 2, 3] = mask[2, 4, 1] = True
    assert Box.of_mask(mask) == Box((1, 2, 1), (3, 5, 4))
    assert Box.of_mask(np.zeros((3, 3), bool)).is_empty
