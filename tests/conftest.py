"""Shared fixtures. Fixtures for one area live in that area's conftest.

``blobs`` is a small synthetic two-class volume: bright blobs (class 2) on a noisy,
gently lit background (class 1), for classification tests.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.sources.array import ArrayVolume


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_blobs(shape=(24, 64, 64), seed=0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = np.ones(shape, dtype=np.uint8)  # 1 = background
    for _ in range(14):
        c = [rng.uniform(4, n - 4) for n in shape]
        r = rng.uniform(4, 7)
        inside = ((zz - c[0]) * 2) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        truth[inside] = 2  # 2 = blob
    illumination = 1.0 + 0.3 * np.sin(xx / 40.0)
    image = np.where(truth == 2, 900.0, 300.0) * illumination
    image = rng.poisson(image).astype(np.uint16)
    return image, truth


def pyramid_of(image: np.ndarray, voxel_size=(2.0, 1.0, 1.0)) -> MultiscaleVolume:
    """Level 0 plus a 2x (y, x) mean-downsampled level 1."""
    level0 = ArrayVolume(image[None], voxel_size=voxel_size, chunk_shape=(8, 32, 32))
    z, y, x = image.shape
    coarse = image[:, : y // 2 * 2, : x // 2 * 2].astype(np.float32)
    coarse = coarse.reshape(z, y // 2, 2, x // 2, 2).mean(axis=(2, 4)).astype(image.dtype)
    level1 = ArrayVolume(coarse[None], voxel_size=(voxel_size[0], voxel_size[1] * 2,
                                                   voxel_size[2] * 2), chunk_shape=(8, 32, 32))
    return MultiscaleVolume("blobs", [level0, level1])


@pytest.fixture(scope="session")
def blobs():
    return make_blobs()


@pytest.fixture
def blob_source(blobs):
    return pyramid_of(blobs[0])


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted for this test (needs root; skipped where mounting fails)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def fill_disk():
    """``fill_disk(folder)`` fills the file system of ``folder`` with files and returns
    them (delete them to free the space)."""
    return _fill_disk


def _fill_disk(folder) -> list:
    files = []
    chunk = b"x" * 4096
    while True:
        path = os.path.join(folder, f"filler-{len(files)}")
        files.append(path)
        try:
            with open(path, "wb") as f:
                while True:
                    f.write(chunk)
                    f.flush()
        except OSError:
            if os.path.getsize(path) == 0:
                return files
def write_corrupt_zarr(folder, shape=(32, 128, 128), chunks=(16, 64, 64), bad=(1, 0, 1),
                       seed=0):
    """A zstd-compressed zarr v2 array (uint16) with one storage chunk truncated.

    Returns ``(path, data, bad_box)``: ``bad_box`` is the (z, y, x) box of the truncated
    chunk, whose stored bytes no longer decode ("Truncated Zstd-compressed stream"-like).
    """
    import tensorstore as ts

    from ilastik_web.abc import Box

    rng = np.random.default_rng(seed)
    data = rng.integers(100, 4000, size=shape, dtype=np.uint16)
    path = folder / "vol.zarr"
    store = ts.open({
        "driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"},
        "metadata": {"shape": list(shape), "chunks": list(chunks), "dtype": "<u2",
                     "compressor": {"id": "zstd", "level": 1}},
        "create": True,
    }).result()
    store[...] = data
    chunk_file = path / ".".join(str(i) for i in bad)
    raw = chunk_file.read_bytes()
    chunk_file.write_bytes(raw[: len(raw) // 2])
    start = tuple(i * c for i, c in zip(bad, chunks, strict=True))
    bad_box = Box(start, tuple(min(a + c, s) for a, c, s in zip(start, chunks, shape,
                                                                 strict=True)))
    return path, data, bad_box


@pytest.fixture
def corrupt_zarr(tmp_path):
    """``(path, data, bad_box)`` of :func:`write_corrupt_zarr` in a temporary folder."""
    return write_corrupt_zarr(tmp_path)


def write_tensorstore_n5(path, data_zyx: np.ndarray) -> None:
    """An N5 dataset the way tensorstore writes one: attributes.json with dimensions,
    blockSize, dataType, compression, and nothing else (no resolution, no factors)."""
    import tensorstore as ts

    reversed_data = data_zyx.transpose(2, 1, 0)
    store = ts.open({
        "driver": "n5", "kvstore": {"driver": "file", "path": str(path)},
        "metadata": {"dimensions": list(reversed_data.shape), "blockSize": [16, 16, 4],
                     "dataType": data_zyx.dtype.name, "compression": {"type": "zstd"}},
        "create": True,
    }).result()
    store.write(reversed_data).result()


@pytest.fixture
def n5_writer():
    """:func:`write_tensorstore_n5`."""
    return write_tensorstore_n5


@pytest.fixture
def tensorstore_n5(tmp_path):
    """``vol.n5/raw/s0`` (8 x 40 x 36) and ``s1`` (8 x 20 x 18), written by tensorstore:
    ``(container, data, coarse)``."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 4000, (8, 40, 36), dtype=np.uint16)
    container = tmp_path / "vol.n5"
    write_tensorstore_n5(container / "raw" / "s0", data)
    coarse = data[:, ::2, ::2]
    write_tensorstore_n5(container / "raw" / "s1", coarse)
    return container, data, coarse


@pytest.fixture(scope="session")
def swift():
    """A single-node Swift on loopback (see ``swift_server``), with the S3 settings in
    the environment for the session: endpoint, region and the tempauth user's keys."""
    import os
    import tempfile
    from pathlib import Path

    import swift_server

    reason = swift_server.unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = swift_server.start(Path(tempfile.mkdtemp(prefix="ilastik-web-swift-")))
    settings = {"ILASTIK_WEB_S3_ENDPOINT": server.endpoint, "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": server.access_key,
                "AWS_SECRET_ACCESS_KEY": server.secret_key}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield server
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
