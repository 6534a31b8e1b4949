"""Real servers for the real-client tests.

Volumes are written to disk in real formats (ImageJ TIFF, RGB TIFF, OME-TIFF, OME-Zarr 0.4 on
zarr v2, OME-Zarr 0.5 on zarr v3, a plain zarr v3 array) and served by an
``ilastik-web serve`` subprocess on a free loopback port; clients talk plain HTTP to it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import tifffile

REPO = Path(__file__).resolve().parents[2]
#: Seconds the CLI may take to print its URL (imports and opening sources).
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WrittenVolume:
    """A volume as written to disk, with what the server should make of it.

    Attributes
    ----------
    name
        Case name (also the file name stem).
    path
        What the server opens.
    levels
        The written levels, (c, z, y, x), finest first: one level when the format has
        no pyramid, the native pyramid otherwise.
    voxel_sizes
        Voxel size (nm, z, y, x) of each written level.
    coarsest_size
        The server adds computed levels while some axis is longer than this: 64 for a
        source without pyramid metadata (``ilastik_web.pyramid.build_pyramid``), 128 for
        an OME-Zarr (``ilastik_web.server.served_pyramid.complete_pyramid``).
    """

    name: str
    path: Path
    levels: list[np.ndarray]
    voxel_sizes: list[tuple[float, float, float]]
    coarsest_size: int

    @property
    def dtype(self) -> np.dtype:
        return self.levels[0].dtype

    @property
    def num_channels(self) -> int:
        return self.levels[0].shape[0]

    @property
    def is_2d(self) -> bool:
        return self.levels[0].shape[1] == 1


def random_data(dtype: str, shape_czyx: Sequence[int], seed: int) -> np.ndarray:
    """Seeded noise over the dtype's full range (floats: a normal around 100)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(100.0, 20.0, size=shape_czyx).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape_czyx, dtype=dtype, endpoint=True)


def write_zarr_array(path: Path, array: np.ndarray, *, zarr_format: int,
                     chunks: Sequence[int]) -> None:
    """Write ``array`` as a zarr v2 or v3 array with tensorstore."""
    store = ts.open(
        {"driver": "zarr" if zarr_format == 2 else "zarr3",
         "kvstore": {"driver": "file", "path": str(path)}},
        create=True,
        dtype=array.dtype.name,
        shape=array.shape,
        chunk_layout=ts.ChunkLayout(chunk_shape=[min(c, s) for c, s in zip(chunks, array.shape,
                                                                          strict=True)]),
    ).result()
    store.write(array).result()


def write_ome_zarr(path: Path, levels: Sequence[np.ndarray],
                   voxel_sizes: Sequence[Sequence[float]], *, version: str) -> None:
    """An OME-Zarr image (axes c, z, y, x in micrometres) with the given pyramid levels."""
    zarr_format = 2 if version == "0.4" else 3
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    datasets = []
    for index, (level, voxel) in enumerate(zip(levels, voxel_sizes, strict=True)):
        write_zarr_array(path / str(index), level, zarr_format=zarr_format,
                         chunks=(level.shape[0], 4, 100, 100))
        scale = [1.0] + [v / 1000 for v in voxel]
        datasets.append({"path": str(index),
                         "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    multiscale = {"name": path.stem, "axes": axes, "datasets": datasets}
    if zarr_format == 2:
        (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (path / ".zattrs").write_text(
            json.dumps({"multiscales": [{"version": version, **multiscale}]})
        )
    else:
        (path / "zarr.json").write_text(json.dumps({
            "zarr_format": 3, "node_type": "group",
            "attributes": {"ome": {"version": version, "multiscales": [multiscale]}},
        }))


def _imagej_tiff(root: Path) -> WrittenVolume:
    data = random_data("uint8", (1, 40, 260, 300), seed=1)
    path = root / "u8-imagej.tif"
    tifffile.imwrite(path, data[0], imagej=True, resolution=(1 / 0.004, 1 / 0.004),
                     metadata={"spacing": 0.012, "unit": "um", "axes": "ZYX"})
    return WrittenVolume("u8-imagej", path, [data], [(12.0, 4.0, 4.0)], 64)


def _rgb_tiff(root: Path) -> WrittenVolume:
    data = random_data("uint8", (3, 1, 333, 517), seed=2)
    path = root / "u8-rgb-2d.tif"
    tifffile.imwrite(path, np.moveaxis(data[:, 0], 0, -1), photometric="rgb")
    return WrittenVolume("u8-rgb-2d", path, [data], [(1.0, 1.0, 1.0)], 64)


def _ome_tiff_large(root: Path) -> WrittenVolume:
    """Big enough for four halvings of z, y and x together (slow cases only)."""
    data = random_data("uint16", (1, 100, 520, 450), seed=7)
    path = root / "u16-large.ome.tif"
    sizes = {f"PhysicalSize{axis}": size for axis, size in zip("ZYX", (0.008, 0.006, 0.006),
                                                               strict=True)}
    units = {f"PhysicalSize{axis}Unit": "µm" for axis in "ZYX"}
    tifffile.imwrite(path, data[0], metadata={"axes": "ZYX", **sizes, **units})
    return WrittenVolume("u16-large", path, [data], [(8.0, 6.0, 6.0)], 64)


def _zarr3_float(root: Path) -> WrittenVolume:
    data = random_data("float32", (1, 67, 129, 250), seed=3)
    path = root / "f32-zarr3"
    write_zarr_array(path, data[0], zarr_format=3, chunks=(16, 50, 70))
    return WrittenVolume("f32-zarr3", path, [data], [(1.0, 1.0, 1.0)], 64)


def _ome_zarr_single(root: Path, name: str, dtype: str, shape_czyx: Sequence[int],
                     voxel: tuple[float, float, float], version: str, seed: int) -> WrittenVolume:
    data = random_data(dtype, shape_czyx, seed)
    path = root / f"{name}.ome.zarr"
    write_ome_zarr(path, [data], [voxel], version=version)
    return WrittenVolume(name, path, [data], [voxel], 128)


def _ome_zarr_native_pyramid(root: Path) -> WrittenVolume:
    """Level 1 is a strided subsample, not a mean: served as written, never recomputed."""
    data = random_data("uint16", (1, 12, 600, 520), seed=6)
    levels = [data, np.ascontiguousarray(data[:, :, ::2, ::2])]
    voxels = [(40.0, 4.0, 4.0), (40.0, 8.0, 8.0)]
    path = root / "u16-native-pyramid.ome.zarr"
    write_ome_zarr(path, levels, voxels, version="0.4")
    return WrittenVolume("u16-native-pyramid", path, levels, voxels, 128)


def write_cases(root: Path) -> dict[str, WrittenVolume]:
    """Every client-test volume, written under ``root``."""
    cases = [
        _imagej_tiff(root),
        _rgb_tiff(root),
        _zarr3_float(root),
        _ome_zarr_single(root, "u16-3ch-ome04", "uint16", (3, 9, 301, 257), (50.0, 10.0, 10.0),
                         "0.4", seed=4),
        _ome_zarr_single(root, "f32-3ch-ome05", "float32", (3, 5, 270, 390), (100.0, 8.0, 8.0),
                         "0.5", seed=5),
        _ome_zarr_native_pyramid(root),
        _ome_tiff_large(root),
    ]
    return {case.name: case for case in cases}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CliServer:
    """A running ``ilastik-web serve`` subprocess."""

    process: subprocess.Popen
    port: int
    base_url: str
    sources: list[dict] = field(default_factory=list)

    def precomputed_url(self, location: str | Path) -> str:
        """The precomputed URL of the source opened from ``location``."""
        for source in self.sources:
            if source["location"] == str(location):
                return source["precomputed"]
        raise KeyError(f"{location} is not served; served: {[s['location'] for s in self.sources]}")


@contextmanager
def serve_cli(paths: Sequence[str | Path], *extra_args: str) -> Iterator[CliServer]:
    """Run ``ilastik-web serve PATH... --no-project`` on a free port until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "ilastik_web", "serve", *map(str, paths), "--no-browser",
               "--no-project", "--port", str(port), "--log-level", "WARNING", *extra_args]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        url = _first_line(process, STARTUP_TIMEOUT_S)
        if not url:
            process.kill()
            _, err = process.communicate(timeout=10)
            pytest.fail(f"server exited before printing its URL: {err.strip()[-2000:]}")
        base_url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base_url}/api/sources", timeout=30) as response:
            sources = json.load(response)["sources"]
        yield CliServer(process, port, base_url, sources)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _first_line(process: subprocess.Popen, timeout_s: float) -> str:
    """The first stdout line of ``process``, or "" if it exits or stays silent too long."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return process.stdout.readline().strip()


@pytest.fixture(scope="session")
def written_volumes(tmp_path_factory) -> dict[str, WrittenVolume]:
    """The client-test volumes, written once per session."""
    return write_cases(tmp_path_factory.mktemp("client-volumes"))


@pytest.fixture(scope="session")
def cli_server(written_volumes) -> Iterator[CliServer]:
    """One CLI server serving every written volume."""
    with serve_cli([case.path for case in written_volumes.values()]) as server:
        yield server


@pytest.fixture
def precomputed_url(cli_server, written_volumes) -> Callable[[str], str]:
    """``precomputed_url(case_name)``: where the server serves that case."""
    return lambda name: cli_server.precomputed_url(written_volumes[name].path)
