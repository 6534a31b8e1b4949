"""HDF5 datasets: the single dataset of a file, or file.h5/inner/path."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from contract import SourceContract
from test_zarr import stored_layout

from ilastik_web.errors import SourceError
from ilastik_web.sources import open_source


def write_hdf5(path, data, voxel_size, chunks=(3, 5, 16, 16)) -> None:
    array = stored_layout(data)
    with h5py.File(path, "w") as f:
        chunk = tuple(min(c, s) for c, s in zip(chunks[-array.ndim:], array.shape, strict=True))
        dataset = f.create_dataset("volume/raw", data=array, chunks=chunk, compression="gzip")
        spatial = voxel_size if data.shape[1] > 1 else voxel_size[1:]
        dataset.attrs["element_size_um"] = np.asarray(spatial) / 1000


class TestHdf5(SourceContract):
    def write(self, root, data, voxel_size):
        path = root / "data.h5"
        write_hdf5(path, data, voxel_size)
        return path

    def corrupt(self, path):
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)


class TestHdf5InnerPath(TestHdf5):
    """The same files, opened as ``data.h5/volume/raw`` next to an unrelated dataset."""

    @pytest.fixture
    def place(self, tmp_path):
        return tmp_path, lambda path: str(path / "volume" / "raw")

    def write(self, root, data, voxel_size):
        path = super().write(root, data, voxel_size)
        with h5py.File(path, "a") as f:
            f["other"] = np.zeros((4, 4))
        return path


def test_hdf5_contiguous_and_axistags(tmp_path):
    data = np.random.default_rng(0).integers(0, 999, (9, 20, 30, 2), dtype=np.uint16)  # zyxc
    with h5py.File(tmp_path / "a.h5", "w") as f:
        dataset = f.create_dataset("d", data=data)
        dataset.attrs["axistags"] = (
            '{"axes": [{"key": "z"}, {"key": "y"}, {"key": "x"}, {"key": "c"}]}'
        )
    base = open_source(str(tmp_path / "a.h5")).base
    assert (base.num_channels, base.shape, base.voxel_size) == (2, (9, 20, 30), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(base.read(base.bounds), data.transpose(3, 0, 1, 2))


def test_hdf5_with_several_datasets_asks_for_one(tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((4, 4))
        f["b"] = np.zeros((4, 4))
    with pytest.raises(SourceError, match="several datasets"):
        open_source(str(tmp_path / "two.h5"))
    with pytest.raises(SourceError, match="no dataset 'c'"):
        open_source(str(tmp_path / "two.h5" / "c"))
