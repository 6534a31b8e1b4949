"""TIFF: OME-TIFF (tiled, compressed: zarr view) and plain stacks (memory-mapped)."""

from __future__ import annotations

import numpy as np
import tifffile
from contract import SourceContract

from ilastik_web.sources import open_source


class TestOmeTiffTiled(SourceContract):
    unsupported_dtype = None  # tifffile writes complex, but OME cannot say so reliably

    def write(self, root, data, voxel_size):
        path = root / "image.ome.tif"
        c, z = data.shape[:2]
        tifffile.imwrite(
            path,
            data.transpose(1, 0, 2, 3),  # z c y x
            ome=True,
            tile=(16, 16),
            compression="zlib",
            metadata={
                "axes": "ZCYX",
                "PhysicalSizeX": voxel_size[2] / 1000,
                "PhysicalSizeY": voxel_size[1] / 1000,
                "PhysicalSizeZ": voxel_size[0] / 1000,
            },
        )
        return path

    def corrupt(self, path):
        path.write_bytes(b"II*\x00" + b"\xff" * 40)


class TestTiffContiguous(SourceContract):
    """Uncompressed pages with tifffile's shaped metadata: read through a memory map."""

    stores_voxel_size = False

    def write(self, root, data, voxel_size):
        path = root / "stack.tif"
        tifffile.imwrite(
            path, data.transpose(1, 0, 2, 3), photometric="minisblack", metadata={"axes": "ZCYX"}
        )
        return path

    def corrupt(self, path):
        path.write_bytes(b"MM\x00*" + b"\x00" * 3)


def test_imagej_hyperstack_voxel_size(tmp_path):
    data = np.arange(4 * 2 * 10 * 12, dtype=np.uint16).reshape(4, 2, 10, 12)  # z c y x
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um"},
    )
    base = open_source(str(tmp_path / "ij.tif")).base
    assert base.num_channels == 2
    np.testing.assert_allclose(base.voxel_size, (500.0, 200.0, 200.0), rtol=1e-5)
    np.testing.assert_array_equal(base.read(base.bounds), data.transpose(1, 0, 2, 3))
