"""Shared fixtures. Fixtures for one area live in that area's conftest.

``blobs`` is a small synthetic two-class volume: bright blobs (class 2) on a noisy,
gently lit background (class 1), for classification tests.
"""

from __future__ import annotations

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
