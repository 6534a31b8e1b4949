"""Neuroglancer precomputed volumes, locally and over HTTP."""

from __future__ import annotations

import numpy as np
import pytest
import tensorstore as ts
from contract import SourceContract

from ilastik_web.abc import Box
from ilastik_web.sources import open_source


def write_precomputed(path, data: np.ndarray, voxel_size, chunk=(16, 16, 4), scales=1) -> None:
    """Store (c, z, y, x) ``data`` as precomputed (x, y, z, channel), ``scales`` levels
    halving x and y."""
    for level in range(scales):
        step = 2**level
        array = data[:, :, ::step, ::step]
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "file", "path": str(path)},
                "multiscale_metadata": {
                    "type": "image",
                    "data_type": data.dtype.name,
                    "num_channels": data.shape[0],
                },
                "scale_metadata": {
                    "size": list(array.shape[1:][::-1]),
                    "resolution": [voxel_size[2] * step, voxel_size[1] * step, voxel_size[0]],
                    "encoding": "raw",
                    "chunk_size": list(chunk),
                },
            },
            create=True,
        ).result()
        store.write(array.transpose(3, 2, 1, 0)).result()


class TestPrecomputed(SourceContract):
    unsupported_dtype = None  # precomputed stores no type the sources refuse
    chunk = (16, 16, 4)

    def write(self, root, data, voxel_size):
        path = root / "volume"
        write_precomputed(path, data, voxel_size, self.chunk)
        return path

    def corrupt(self, path):
        (path / "info").write_text('{"scales": "none"}')


class TestPrecomputedOverHttp(TestPrecomputed):
    remote = True
    chunk = (32, 24, 8)

    @pytest.fixture
    def place(self, served_place):
        return served_place


def test_precomputed_native_scales_are_the_pyramid(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (1, 5, 30, 44), dtype=np.uint8)
    write_precomputed(tmp_path / "v", data, (40.0, 8.0, 8.0), scales=2)
    pyramid = open_source(str(tmp_path / "v"))
    assert [pyramid.factors(i) for i in range(len(pyramid))] == [(1, 1, 1), (1, 2, 2)]
    np.testing.assert_array_equal(
        pyramid.levels[1].read(Box((1, 3, 5), (4, 15, 22))), data[:, 1:4, ::2, ::2][:, :, 3:, 5:]
    )
