"""OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3) with a native two-level pyramid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from contract import VOXEL_3D, SourceContract
from test_zarr import write_zarr

from ilastik_web.abc import Box
from ilastik_web.pyramid import downsample_mean
from ilastik_web.sources import open_source


def axes_for(data: np.ndarray) -> list[dict]:
    c, z = data.shape[:2]
    axes = [{"name": "c", "type": "channel"}] if c > 1 or z == 1 else []
    spatial = ["y", "x"] if z == 1 else ["z", "y", "x"]
    return axes + [{"name": n, "type": "space", "unit": "micrometer"} for n in spatial]


def stored(data: np.ndarray, axes: list[dict]) -> np.ndarray:
    out = data
    if axes[0]["name"] != "c":
        out = out[0]
    elif len(axes) == 3:
        out = out[:, 0]
    return out


def write_ome_zarr(root, data, voxel_size, version: str, chunks=(3, 4, 16, 16)):
    path = root / "image.ome.zarr"
    path.mkdir()
    axes = axes_for(data)
    driver = "zarr" if version == "0.4" else "zarr3"
    spatial_um = [v / 1000 for v in voxel_size]
    datasets = []
    for level, factors in enumerate([(1, 1, 1), (1, 2, 2)]):
        array = downsample_mean(data, factors)
        write_zarr(path / str(level), stored(array, axes), driver, chunks)
        scale = [v * f for v, f in zip(spatial_um, factors, strict=True)]
        scale = scale[1:] if data.shape[1] == 1 else scale
        scale = [1.0] * (len(axes) - len(scale)) + scale
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    multiscale = {"version": version, "name": "image", "axes": axes, "datasets": datasets}
    if version == "0.4":
        (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (path / ".zattrs").write_text(json.dumps({"multiscales": [multiscale]}))
    else:
        del multiscale["version"]
        attributes = {"ome": {"version": "0.5", "multiscales": [multiscale]}}
        (path / "zarr.json").write_text(
            json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes})
        )
    return path


class TestOmeZarr04(SourceContract):
    version = "0.4"
    metadata_file = ".zattrs"
    chunks = (3, 4, 16, 16)

    def write(self, root, data, voxel_size):
        return write_ome_zarr(root, data, voxel_size, self.version, self.chunks)

    def corrupt(self, path):
        (path / self.metadata_file).write_text('{"multiscales": [{"datasets": 3}]}')

    def test_native_pyramid_is_served(self, place):
        root, to_location = place
        data = np.random.default_rng(0).integers(0, 255, (1, 6, 30, 42), dtype=np.uint8)
        pyramid = open_source(to_location(self.write(root, data, VOXEL_3D)))
        assert len(pyramid) == 2
        assert pyramid.factors(1) == (1, 2, 2)
        assert pyramid.levels[1].voxel_size == pytest.approx((250.0, 120.0, 80.0))
        np.testing.assert_array_equal(
            pyramid.levels[1].read(Box((0, 0, 0), (6, 15, 21))), downsample_mean(data, (1, 2, 2))
        )


class TestOmeZarr05(TestOmeZarr04):
    version = "0.5"
    metadata_file = "zarr.json"

    def corrupt(self, path):
        (path / self.metadata_file).write_text("[")


class TestOmeZarr04OverHttp(TestOmeZarr04):
    remote = True
    chunks = (4, 8, 24, 32)

    @pytest.fixture
    def place(self, served_place):
        return served_place
