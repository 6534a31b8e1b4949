"""tensorstore's neuroglancer_precomputed driver and cloud-volume read what the CLI serves.

Each case is a volume written to disk in a real format and served by ``ilastik-web serve``
over loopback HTTP; every pyramid level read by each client must equal, voxel for voxel,
the written data (level 0, native levels) or its numpy mean-downsample (computed levels).
"""

from __future__ import annotations

import functools
import json
import urllib.request

import numpy as np
import pytest
import tensorstore as ts
from expected_pyramid import expected_levels

QUICK_CASES = ["u8-imagej", "u8-rgb-2d", "f32-zarr3", "u16-3ch-ome04", "f32-3ch-ome05",
               "u16-native-pyramid"]
SLOW_CASES = ["u16-large"]
CASES = QUICK_CASES + [pytest.param(name, marks=pytest.mark.slow) for name in SLOW_CASES]
#: The flat chunk grids need many small requests: quick on the small cases only.
GRID_CASES = ["u8-imagej", "u16-3ch-ome04"] + [
    pytest.param(name, marks=pytest.mark.slow)
    for name in ("f32-zarr3", "f32-3ch-ome05", "u16-native-pyramid", *SLOW_CASES)
]
#: Seconds any one client read may take before the test fails instead of hanging.
READ_TIMEOUT_S = 120


def to_czyx(xyzc: np.ndarray) -> np.ndarray:
    """A client's (x, y, z, c) array in our (c, z, y, x) order."""
    return np.ascontiguousarray(np.asarray(xyzc).transpose(3, 2, 1, 0))


def fetch_info(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/info", timeout=30) as response:
        return json.load(response)


def assert_level_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    differ = got != want
    if np.issubdtype(want.dtype, np.floating):
        differ &= ~(np.isnan(got) & np.isnan(want))
    if differ.any():
        where = tuple(int(i) for i in np.argwhere(differ)[0])
        pytest.fail(f"{what}: {int(differ.sum())} of {differ.size} voxels differ, first at "
                    f"(c, z, y, x) {where}: got {got[where]}, want {want[where]}")


@pytest.fixture(scope="session")
def expected(written_volumes):
    """``expected(name)``: the levels a client should read, computed once per case."""

    @functools.cache
    def levels(name: str):
        written = written_volumes[name]
        return expected_levels(written.levels, written.voxel_sizes, written.coarsest_size)

    return levels


@pytest.fixture(params=CASES)
def case(request, written_volumes, precomputed_url, expected):
    """(written volume, its precomputed URL, the expected levels)."""
    name = request.param
    return written_volumes[name], precomputed_url(name), expected(name)


@pytest.fixture(params=GRID_CASES)
def grid_case(request, written_volumes, precomputed_url, expected):
    name = request.param
    return written_volumes[name], precomputed_url(name), expected(name)


def test_info_describes_the_expected_pyramid(case):
    written, url, levels = case
    info = fetch_info(url)
    assert info["type"] == "image"
    assert info["data_type"] == written.dtype.name
    assert info["num_channels"] == written.num_channels
    assert len(info["scales"]) == len(levels)
    for index, (scale, (data, voxel)) in enumerate(zip(info["scales"], levels, strict=True)):
        assert scale["key"] == f"s{index}"
        assert scale["size"] == list(data.shape[:0:-1]), f"s{index} size"
        assert scale["resolution"] == pytest.approx(list(voxel[::-1])), f"s{index} resolution"
        assert scale["voxel_offset"] == [0, 0, 0]
        assert scale["encoding"] == "raw"
        assert len(scale["chunk_sizes"]) == (1 if written.is_2d else 3)


def http_kvstore(url: str, accept_encoding: str | None) -> dict:
    """tensorstore's http kvstore for ``url``; by default it accepts gzip (and more)."""
    base, _, path = url.partition("/precomputed/")
    spec = {"driver": "http", "base_url": base, "path": f"/precomputed/{path}/"}
    if accept_encoding is not None:
        spec["headers"] = [f"Accept-Encoding: {accept_encoding}"]
    return spec


@pytest.mark.parametrize("accept_encoding", [None, "identity"], ids=["gzip", "identity"])
def test_tensorstore_reads_every_level(case, accept_encoding):
    written, url, levels = case
    for index, (want, _) in enumerate(levels):
        store = ts.open({"driver": "neuroglancer_precomputed",
                         "kvstore": http_kvstore(url, accept_encoding), "scale_index": index},
                        read=True).result(timeout=READ_TIMEOUT_S)
        got = to_czyx(store.read().result(timeout=READ_TIMEOUT_S))
        assert_level_equal(got, want, f"{written.name} s{index} (tensorstore, "
                                      f"{accept_encoding or 'gzip'})")


def test_cloudvolume_reads_every_level(case):
    """cloud-volume (requests) asks for gzip; it also probes ``provenance`` (a 404 here)."""
    from cloudvolume import CloudVolume

    written, url, levels = case
    for index, (want, voxel) in enumerate(levels):
        volume = CloudVolume(f"precomputed://{url}", mip=index, use_https=False,
                             progress=False, cache=False, fill_missing=False, parallel=1)
        assert tuple(volume.resolution) == pytest.approx(voxel[::-1])
        got = to_czyx(volume[:, :, :])
        assert_level_equal(got, want, f"{written.name} s{index} (cloud-volume)")


@pytest.mark.parametrize("grid", [1, 2], ids=["xz-chunks", "yz-chunks"])
def test_tensorstore_reads_the_flat_chunk_grids(grid_case, grid):
    """The xz and yz chunk shapes Neuroglancer's side panels use, at every level."""
    written, url, levels = grid_case
    info = fetch_info(url)
    for index, (want, _) in enumerate(levels):
        chunk = info["scales"][index]["chunk_sizes"][grid]
        store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"{url}/",
                         "scale_index": index, "scale_metadata": {"chunk_size": chunk}},
                        read=True).result(timeout=READ_TIMEOUT_S)
        assert list(store.chunk_layout.read_chunk.shape[:3]) == chunk
        got = to_czyx(store.read().result(timeout=READ_TIMEOUT_S))
        assert_level_equal(got, want, f"{written.name} s{index} chunks {chunk} (tensorstore)")
