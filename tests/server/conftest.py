"""Fixtures for the server tests: small volumes and apps built by the real factory."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import pytest_asyncio

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.config import ServerConfig
from ilastik_web.server.app import create_app
from ilastik_web.server.layers import ServedLayer, StaticLayer
from ilastik_web.sources.array import ArrayVolume


def _make_volume(
    shape_czyx: Sequence[int],
    dtype: str = "uint8",
    *,
    voxel_size: Sequence[float] = (40.0, 4.0, 4.0),
    seed: int = 0,
    name: str = "vol",
) -> tuple[MultiscaleVolume, np.ndarray]:
    """A single-level volume of seeded random data, and the data itself."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        data = rng.normal(100, 20, size=shape_czyx).astype(dtype)
    else:
        high = min(np.iinfo(dtype).max, 1000)
        data = rng.integers(0, high, size=shape_czyx, dtype=dtype)
    return MultiscaleVolume(name, [ArrayVolume(data, voxel_size, key=f"{name}-{seed}")]), data


@pytest.fixture
def make_volume() -> Callable[..., tuple[MultiscaleVolume, np.ndarray]]:
    """``make_volume(shape_czyx, dtype, *, voxel_size, seed, name) -> (volume, data)``."""
    return _make_volume


@pytest.fixture
def volume_and_data() -> tuple[MultiscaleVolume, np.ndarray]:
    return _make_volume((1, 5, 300, 270))


@pytest.fixture
def make_app() -> Callable[..., object]:
    def factory(layers: Sequence[ServedLayer], **config) -> object:
        config.setdefault("memory_bytes", 256 * 2**20)
        return create_app(ServerConfig(**config), layers=layers)

    return factory


@pytest.fixture
def raw_layer(volume_and_data) -> StaticLayer:
    volume, _ = volume_and_data
    return StaticLayer("raw", volume, cache=ArrayCache(16 * 2**20))


@pytest_asyncio.fixture
async def client(aiohttp_client, make_app, raw_layer):
    return await aiohttp_client(make_app([raw_layer]))
