import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels import Stroke, rasterize


def _reference(stroke: Stroke, shape):
    """Brute force: every voxel centre against densely sampled polyline points."""
    pts = np.asarray(stroke.points)
    dense = [pts[0]]
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        for t in np.linspace(0, 1, 400)[1:]:
            dense.append(a + t * (b - a))
    dense = np.asarray(dense)
    zz, yy, xx = np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij")
    centres = np.stack([zz, yy, xx], -1).reshape(-1, 3)
    keep = [0, 1, 2]
    if stroke.plane != "3d":
        normal = {"xy": 0, "xz": 1, "yz": 2}[stroke.plane]
        keep.remove(normal)
    d = np.min(((centres[:, None, keep] - dense[None, :, keep]) ** 2).sum(-1), axis=1)
    mask = (d <= stroke.radius**2 + 1e-3).reshape(shape)
    if stroke.plane != "3d":
        plane = int(np.floor(pts[0, normal]))
        other = np.ones(shape, bool)
        idx = [slice(None)] * 3
        idx[normal] = plane
        other[tuple(idx)] = False
        mask[other] = False
    return mask


@pytest.mark.parametrize("plane", ["xy", "xz", "yz", "3d"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(plane, seed):
    rng = np.random.default_rng(seed)
    shape = (12, 14, 16)
    points = tuple(tuple(rng.uniform(0, s) for s in shape) for _ in range(4))
    stroke = Stroke(points, radius=float(rng.uniform(0.6, 3)), label=2, plane=plane)
    got = rasterize(stroke, Box.from_shape(shape))
    want = _reference(stroke, shape)
    # Allow disagreement only on voxels whose distance is within the sampling tolerance.
    assert (got != want).sum() <= max(2, int(0.01 * want.sum()))
    assert got.sum() > 0


def test_sub_box_equals_crop_of_full():
    stroke = Stroke(((3.5, 2.2, 4.1), (3.5, 9.9, 11.0)), radius=2.0, label=1, plane="xy")
    full = rasterize(stroke, Box.from_shape((6, 12, 14)))
    part_box = Box((2, 3, 5), (5, 10, 14))
    assert np.array_equal(rasterize(stroke, part_box), full[part_box.slices])


def test_flat_stroke_stays_in_its_plane():
    stroke = Stroke(((4.5, 5.5, 5.5),), radius=3.0, label=1, plane="xy")
    mask = rasterize(stroke, Box.from_shape((9, 11, 11)))
    assert mask[4].sum() > 0 and mask.sum() == mask[4].sum()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"points": (), "radius": 1, "label": 1},
        {"points": ((0, 0, float("nan")),), "radius": 1, "label": 1},
        {"points": ((0, 0, 0),), "radius": 0, "label": 1},
        {"points": ((0, 0, 0),), "radius": 1, "label": 256},
        {"points": ((0, 0, 0),), "radius": 1, "label": 1, "plane": "zz"},
    ],
)
def test_rejects_malformed(kwargs):
    with pytest.raises(InvalidRequestError):
        Stroke(**kwargs)
