"""Plain zarr v2/v3 arrays, locally and over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
from contract import SourceContract

from ilastik_web.abc import Box
from ilastik_web.sources import open_source


def stored_layout(data: np.ndarray) -> np.ndarray:
    """How a plain array is stored: (y, x), (c, y, x), (z, y, x) or (c, z, y, x)."""
    c, z = data.shape[:2]
    if z == 1:
        return data[0, 0] if c == 1 else data[:, 0]
    return data[0] if c == 1 else data


def write_zarr(path: Path, array: np.ndarray, driver: str, chunks: tuple[int, ...]) -> None:
    chunks = tuple(min(c, s) for c, s in zip(chunks[-array.ndim:], array.shape, strict=True))
    metadata: dict = {"shape": list(array.shape)}
    if driver == "zarr":
        metadata |= {"chunks": list(chunks), "dtype": array.dtype.str}
    else:
        metadata |= {
            "data_type": array.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        }
    store = ts.open(
        {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}, "metadata": metadata},
        create=True,
        delete_existing=True,
    ).result()
    store.write(array).result()


class TestZarrV2(SourceContract):
    driver = "zarr"
    stores_voxel_size = False
    metadata_file = ".zarray"
    chunks = (4, 5, 16, 16)

    def write(self, root, data, voxel_size):
        path = root / "array.zarr"
        write_zarr(path, stored_layout(data), self.driver, self.chunks)
        return path

    def corrupt(self, path):
        (path / self.metadata_file).write_text("{not json")


class TestZarrV3(TestZarrV2):
    driver = "zarr3"
    metadata_file = "zarr.json"


class TestZarrV2OverHttp(TestZarrV2):
    remote = True
    chunks = (4, 8, 24, 32)  # fewer requests keep the HTTP tests quick

    @pytest.fixture
    def place(self, served_place):
        return served_place


class TestZarrV3OverHttp(TestZarrV3):
    remote = True
    chunks = (4, 8, 24, 32)

    @pytest.fixture
    def place(self, served_place):
        return served_place


def test_zarr3_dimension_names_pick_the_channel_axis(tmp_path):
    data = np.arange(2 * 3 * 5 * 7, dtype=np.uint16).reshape(2, 3, 5, 7)  # c z y x
    stored = data.transpose(1, 2, 3, 0)  # z y x c, with 2 channels: no heuristic needed
    path = tmp_path / "named.zarr"
    ts.open(
        {
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": str(path)},
            "metadata": {
                "shape": list(stored.shape),
                "data_type": "uint16",
                "dimension_names": ["z", "y", "x", "c"],
            },
        },
        create=True,
    ).result().write(stored).result()
    base = open_source(str(path)).base
    assert (base.num_channels, base.shape) == (2, (3, 5, 7))
    np.testing.assert_array_equal(base.read(base.bounds), data)
    np.testing.assert_array_equal(base.read(Box((1, 2, 3), (3, 4, 6))), data[:, 1:3, 2:4, 3:6])
