"""Format detection and the errors open_source gives for what it cannot open."""

from __future__ import annotations

import json

import numpy as np
import pytest
from contract import VOXEL_3D, make_data
from test_zarr import write_zarr

from ilastik_web.abc import Box
from ilastik_web.errors import SourceError
from ilastik_web.sources import open_source


def test_unsupported_file_and_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match=r"notes\.txt: unsupported file format"):
        open_source(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty: unsupported format"):
        open_source(str(tmp_path / "empty"))


def test_zarr_group_without_multiscales_names_the_problem(tmp_path):
    (tmp_path / "g.zarr").mkdir()
    (tmp_path / "g.zarr" / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    with pytest.raises(SourceError, match="without OME multiscales"):
        open_source(str(tmp_path / "g.zarr"))


def test_ome_zarr_with_missing_level(tmp_path):
    path = tmp_path / "broken.ome.zarr"
    path.mkdir()
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    multiscales = [{"axes": axes, "datasets": datasets}]
    (path / ".zattrs").write_text(json.dumps({"multiscales": multiscales}))
    with pytest.raises(SourceError, match="level '0' is missing"):
        open_source(str(path))


def test_remote_hdf5_is_refused():
    with pytest.raises(SourceError, match="only as local files"):
        open_source("http://127.0.0.1:9/data.h5")


@pytest.mark.parametrize("voxel_size", [(1.0, 2.0), (0.0, 1.0, 1.0), (-1.0, 1.0, 1.0)])
def test_bad_voxel_size_override(tmp_path, voxel_size):
    write_zarr(tmp_path / "a.zarr", make_data("uint8", 1, (2, 8, 8), seed=0)[0], "zarr", (8, 8, 8))
    with pytest.raises(SourceError, match="voxel size override"):
        open_source(str(tmp_path / "a.zarr"), voxel_size=voxel_size)


def test_empty_location():
    with pytest.raises(SourceError, match="empty source location"):
        open_source("  ")


def test_unsupported_unit(tmp_path):
    path = tmp_path / "u.ome.zarr"
    path.mkdir()
    write_zarr(path / "0", np.zeros((4, 4), np.uint8), "zarr", (4, 4))
    axes = [{"name": n, "type": "space", "unit": "parsec"} for n in "yx"]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]
    multiscales = [{"axes": axes, "datasets": datasets}]
    (path / ".zattrs").write_text(json.dumps({"multiscales": multiscales}))
    with pytest.raises(SourceError, match="unsupported spatial unit 'parsec'"):
        open_source(str(path))


def test_pyramid_is_built_for_a_source_without_one(tmp_path):
    data = make_data("uint16", 1, (40, 150, 130), seed=5)
    write_zarr(tmp_path / "big.zarr", data[0], "zarr", (16, 32, 32))
    pyramid = open_source(str(tmp_path / "big.zarr"), voxel_size=VOXEL_3D)
    assert len(pyramid) > 1
    assert max(pyramid.levels[-1].shape) <= 64
    assert pyramid.levels[1].key == pyramid.levels[1].key


def test_corrupt_chunk_fails_at_read_with_the_location(tmp_path):
    data = make_data("uint16", 1, (6, 16, 16), seed=6)[0]
    path = tmp_path / "c.zarr"
    write_zarr(path, data, "zarr", (6, 8, 8))
    (path / "0.1.0").write_bytes(b"garbage")
    base = open_source(str(path)).base
    np.testing.assert_array_equal(base.read(Box((0, 0, 0), (6, 8, 8))), data[None, :, :8, :8])
    with pytest.raises(SourceError, match=r"c\.zarr: unreadable chunk \[0:6, 8:16, 0:8\]") as info:
        base.read(base.bounds)
    assert "\n" not in str(info.value)
    assert info.value.chunks == (Box((0, 8, 0), (6, 16, 8)),)  # the one bad chunk, found


def test_bioformats2raw_layout_opens_its_first_image(tmp_path):
    from test_ome_zarr import write_ome_zarr

    root = tmp_path / "converted.zarr"
    root.mkdir()
    (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (root / ".zattrs").write_text(json.dumps({"bioformats2raw.layout": 3}))
    data = make_data("uint8", 1, (5, 20, 24), seed=8)
    image = write_ome_zarr(root, data, VOXEL_3D, "0.4")
    image.rename(root / "0")
    base = open_source(str(root)).base
    np.testing.assert_array_equal(base.read(base.bounds), data)
