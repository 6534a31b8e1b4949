"""N5 datasets (x-fastest dimension order, pixelResolution in µm) and N5 pyramids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorstore as ts
from contract import VOXEL_3D, SourceContract, make_data
from test_zarr import stored_layout

from ilastik_web.errors import SourceError
from ilastik_web.sources import open_source


def write_n5(path, data: np.ndarray, voxel_size, block=(16, 16, 5, 4)) -> None:
    """Store ``data`` (c, z, y, x) the N5 way: dimensions listed x first."""
    array = stored_layout(data)
    reversed_array = array.transpose(tuple(range(array.ndim))[::-1])
    shape = list(reversed_array.shape)
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(path)},
            "metadata": {
                "dimensions": shape,
                "blockSize": [min(b, s) for b, s in zip(block, shape, strict=False)],
                "dataType": array.dtype.name,
                "compression": {"type": "gzip"},
            },
        },
        create=True,
        delete_existing=True,
    ).result()
    store.write(reversed_array).result()
    attributes = json.loads((path / "attributes.json").read_text())
    spatial = [voxel_size[2] / 1000, voxel_size[1] / 1000]
    if data.shape[1] > 1:
        spatial.append(voxel_size[0] / 1000)
    extra = [1.0] * (array.ndim - len(spatial))
    attributes["pixelResolution"] = {"unit": "um", "dimensions": spatial + extra}
    (path / "attributes.json").write_text(json.dumps(attributes))


class TestN5(SourceContract):
    unsupported_dtype = None  # N5 has no type the sources refuse

    def write(self, root, data, voxel_size):
        path = root / "volume.n5"
        write_n5(path, data, voxel_size)
        return path

    def corrupt(self, path):
        (path / "attributes.json").write_text('{"dimensions": [1, 2], "dataType": "uint8"')


def test_n5_multiscale_group(tmp_path):
    data = make_data("uint16", 1, (8, 40, 36), seed=3)
    group = tmp_path / "pyramid.n5"
    group.mkdir()
    (group / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    write_n5(group / "s0", data, VOXEL_3D)
    coarse = data[:, :, ::2, ::2]
    write_n5(group / "s1", coarse, VOXEL_3D)
    attributes = json.loads((group / "s1" / "attributes.json").read_text())
    attributes["downsamplingFactors"] = [2, 2, 1]
    (group / "s1" / "attributes.json").write_text(json.dumps(attributes))
    pyramid = open_source(str(group))
    assert len(pyramid) == 2
    assert pyramid.factors(1) == (1, 2, 2)
    assert pyramid.levels[0].voxel_size == pytest.approx(VOXEL_3D)
    np.testing.assert_array_equal(pyramid.levels[1].read(pyramid.levels[1].bounds), coarse)


@pytest.mark.parametrize("where", ["vol.n5", "vol.n5/raw"])
def test_tensorstore_multiscale_n5_opens_at_container_and_group(tensorstore_n5, where):
    container, data, coarse = tensorstore_n5
    pyramid = open_source(str(container.parent / where))
    assert pyramid.name == "raw"
    assert len(pyramid) >= 2 and pyramid.factors(1) == (1, 2, 2)  # inferred from shapes
    np.testing.assert_array_equal(pyramid.base.read(pyramid.base.bounds)[0], data)
    np.testing.assert_array_equal(pyramid.levels[1].read(pyramid.levels[1].bounds)[0], coarse)


def test_container_with_several_datasets_lists_them(tensorstore_n5, n5_writer):

    container, data, _ = tensorstore_n5
    n5_writer(container / "labels", data[:, :8, :8])
    n5_writer(container / "more" / "mask", data[:, :8, :8])
    with pytest.raises(SourceError, match=r"several datasets \(labels, more/mask, raw\)"):
        open_source(str(container))
    assert open_source(str(container / "more")).base.shape == (8, 8, 8)
