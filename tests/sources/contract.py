"""The contract every source backend satisfies, as a base class for backend tests.

A backend's test class subclasses :class:`SourceContract` and implements ``write``
(store a (c, z, y, x) array with a voxel size in that format, return the path to open)
and ``corrupt`` (damage what ``write`` made so that opening must fail).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.errors import ForbiddenError, OutOfBoundsError, SourceError
from ilastik_web.sources import open_source

# (dtype, channels, (z, y, x)): 2D and 3D, 1 and 3 channels, shapes that are not
# multiples of the chunking the writers use.
CASES = [
    ("uint8", 1, (1, 37, 45)),
    ("uint16", 3, (1, 40, 33)),
    ("float32", 1, (19, 37, 45)),
    ("uint16", 3, (11, 30, 41)),
    ("uint8", 2, (9, 26, 70)),
]
VOXEL_3D = (250.0, 60.0, 40.0)  # anisotropic, nm (z, y, x)
VOXEL_2D = (1.0, 60.0, 40.0)  # z of a 2D image is whatever the format says; not checked


def case_id(case: tuple) -> str:
    dtype, channels, shape = case
    return f"{dtype}-c{channels}-{'x'.join(map(str, shape))}"


def make_data(dtype: str, channels: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    full = (channels, *shape)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=full).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=full, endpoint=True).astype(dtype)


@dataclass
class Written:
    location: str
    path: Path
    data: np.ndarray
    voxel_size: tuple[float, float, float]


class SourceContract:
    """Shared tests; subclasses implement :meth:`write` and :meth:`corrupt`."""

    #: The format records a voxel size (else 1 nm per axis is expected).
    stores_voxel_size = True
    #: The source is opened by URL (no allowed-roots checks apply).
    remote = False
    #: A dtype the format can store but the sources refuse, or None.
    unsupported_dtype: str | None = "complex64"

    def write(self, root: Path, data: np.ndarray, voxel_size: tuple[float, float, float]) -> Path:
        raise NotImplementedError

    def corrupt(self, path: Path) -> None:
        raise NotImplementedError

    @pytest.fixture
    def place(self, tmp_path: Path) -> tuple[Path, Callable[[Path], str]]:
        """Folder to write into and how a written path becomes a location."""
        return tmp_path, str

    @pytest.fixture(params=CASES, ids=[case_id(c) for c in CASES])
    def written(self, request: pytest.FixtureRequest, place) -> Written:
        dtype, channels, shape = request.param
        data = make_data(dtype, channels, shape, seed=CASES.index(request.param))
        voxel = VOXEL_3D if shape[0] > 1 else VOXEL_2D
        root, to_location = place
        path = self.write(root, data, voxel)
        return Written(to_location(path), path, data, voxel)

    def expected_voxel(self, written: Written) -> tuple[float, ...]:
        if not self.stores_voxel_size:
            return (1.0, 1.0, 1.0)
        return written.voxel_size

    def test_metadata(self, written: Written) -> None:
        base = open_source(written.location).base
        assert base.shape == written.data.shape[1:]
        assert base.num_channels == written.data.shape[0]
        assert base.dtype == written.data.dtype
        expected = self.expected_voxel(written)
        if written.data.shape[1] == 1:  # 2D: only y, x are meaningful
            np.testing.assert_allclose(base.voxel_size[1:], expected[1:], rtol=1e-6)
        else:
            np.testing.assert_allclose(base.voxel_size, expected, rtol=1e-6)
        assert all(1 <= c <= s for c, s in zip(base.chunk_shape, base.shape, strict=True))

    def test_random_boxes_equal_written_data(self, written: Written) -> None:
        base = open_source(written.location).base
        rng = np.random.default_rng(1)
        shape = written.data.shape[1:]
        np.testing.assert_array_equal(base.read(Box.from_shape(shape)), written.data)
        for _ in range(8):
            start = [int(rng.integers(0, s)) for s in shape]
            stop = [int(rng.integers(a + 1, s + 1)) for a, s in zip(start, shape, strict=True)]
            box = Box(tuple(start), tuple(stop))
            got = base.read(box)
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got, written.data[(slice(None), *box.slices)])

    def test_concurrent_reads(self, written: Written) -> None:
        base = open_source(written.location).base
        shape = written.data.shape[1:]
        boxes = [Box((0, 0, i % 5), shape) for i in range(12)]
        failures: list[BaseException] = []

        def worker(box: Box) -> None:
            try:
                np.testing.assert_array_equal(
                    base.read(box), written.data[(slice(None), *box.slices)]
                )
            except BaseException as exc:  # collected and re-raised in the main thread
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(b,)) for b in boxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[0]

    def test_out_of_bounds_box_raises(self, written: Written) -> None:
        base = open_source(written.location).base
        z, y, x = base.shape
        with pytest.raises(OutOfBoundsError):
            base.read(Box((0, 0, 0), (z, y, x + 1)))
        with pytest.raises(OutOfBoundsError):
            base.read(Box((-1, 0, 0), (1, 1, 1)))

    def test_voxel_size_override(self, written: Written) -> None:
        pyramid = open_source(written.location, voxel_size=(3.0, 2.0, 1.0))
        assert pyramid.base.voxel_size == (3.0, 2.0, 1.0)
        for index, level in enumerate(pyramid.levels):
            factors = pyramid.factors(index)
            assert level.voxel_size == pytest.approx(
                tuple(v * f for v, f in zip((3.0, 2.0, 1.0), factors, strict=True))
            )

    def test_keys_are_stable(self, written: Written) -> None:
        first = [level.key for level in open_source(written.location).levels]
        second = [level.key for level in open_source(written.location).levels]
        assert first == second
        assert len(set(first)) == len(first)

    def test_pyramid_levels_read(self, written: Written) -> None:
        pyramid = open_source(written.location)
        for level in pyramid.levels:
            assert level.read(level.bounds).shape == (written.data.shape[0], *level.shape)

    def test_missing_location(self, place) -> None:
        root, to_location = place
        location = to_location(root / "does-not-exist")
        with pytest.raises(SourceError, match="does-not-exist") as info:
            open_source(location)
        assert "\n" not in str(info.value)

    def test_corrupt_metadata(self, place) -> None:
        root, to_location = place
        path = self.write(root, make_data("uint8", 1, (3, 20, 20), seed=7), VOXEL_3D)
        self.corrupt(path)
        location = to_location(path)
        with pytest.raises(SourceError) as info:
            open_source(location).base.read(Box((0, 0, 0), (3, 20, 20)))
        message = str(info.value)
        assert location.rstrip("/") in message
        assert "\n" not in message

    def test_unsupported_dtype(self, place) -> None:
        if self.unsupported_dtype is None:
            pytest.skip("the format cannot store a dtype the sources refuse")
        root, to_location = place
        data = np.zeros((1, 2, 8, 8), self.unsupported_dtype)
        location = to_location(self.write(root, data, VOXEL_3D))
        with pytest.raises(SourceError, match="unsupported data type"):
            open_source(location)

    def test_allowed_roots(self, written: Written, tmp_path_factory) -> None:
        if self.remote:
            pytest.skip("URLs are not subject to allowed roots")
        elsewhere = tmp_path_factory.mktemp("elsewhere")
        with pytest.raises(ForbiddenError):
            open_source(written.location, allowed_roots=[elsewhere])
        open_source(written.location, allowed_roots=[written.path.parent])
        link = elsewhere / "link"
        link.symlink_to(written.path)
        with pytest.raises(ForbiddenError):
            open_source(str(link), allowed_roots=[elsewhere])
