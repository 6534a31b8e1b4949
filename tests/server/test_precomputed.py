"""Precomputed serving over HTTP: info, chunk bytes, encodings, errors, versions."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.cache import ArrayCache
from ilastik_web.cancel import cancel_requested
from ilastik_web.pyramid import build_pyramid, downsample_mean, downsample_mode
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.layers import StaticLayer, VersionedLayer
from ilastik_web.sources.array import ArrayVolume

#: Deadline of every wait for a condition (generous: the machine may be busy).
UNTIL_S = 120


async def until(predicate, what: str, timeout: float = UNTIL_S) -> None:
    """Poll ``predicate`` on the event loop until it is truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.01)


def decode(body: bytes, dtype, shape_czyx) -> np.ndarray:
    return np.frombuffer(body, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape_czyx)


async def test_info_lists_every_scale(client, volume_and_data):
    _, data = volume_and_data
    resp = await client.get("/precomputed/raw/v0/info")
    assert resp.status == 200
    info = await resp.json()
    assert info["type"] == "image"
    assert info["data_type"] == "uint8"
    assert info["num_channels"] == 1
    scales = info["scales"]
    assert [s["key"] for s in scales] == [f"s{i}" for i in range(len(scales))]
    assert len(scales) >= 2
    s0 = scales[0]
    assert s0["size"] == [270, 300, 5]
    assert s0["resolution"] == [4.0, 4.0, 40.0]
    assert s0["voxel_offset"] == [0, 0, 0]
    assert s0["encoding"] == "raw"
    # one flat chunk shape per orthogonal plane, the same count on every scale
    assert s0["chunk_sizes"] == [[256, 256, 1], [256, 1, 5], [1, 256, 5]]
    assert {len(s["chunk_sizes"]) for s in scales} == {3}
    resolutions = [s["resolution"] for s in scales]
    assert all(
        all(b >= a for a, b in zip(r0, r1, strict=True))
        for r0, r1 in zip(resolutions, resolutions[1:], strict=False)
    )
    assert max(scales[-1]["size"]) <= 128
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("shape_czyx", "dtype"),
    [
        ((1, 3, 300, 270), "uint8"),
        ((1, 2, 70, 90), "uint16"),
        ((2, 4, 50, 60), "float32"),
        ((3, 1, 260, 300), "uint8"),
        ((1, 3, 40, 30), "int16"),
        ((1, 2, 30, 20), "uint64"),
    ],
)
async def test_chunk_bytes_equal_source(aiohttp_client, make_app, make_volume, shape_czyx, dtype):
    volume, data = make_volume(shape_czyx, dtype, seed=3)
    client = await aiohttp_client(make_app([StaticLayer("v", volume)]))
    info = await (await client.get("/precomputed/v/v0/info")).json()
    c, z, y, x = shape_czyx
    for cx, cy, cz in info["scales"][0]["chunk_sizes"]:
        # the last chunk along every axis: short where the size is not a multiple
        x0, y0, z0 = (x - 1) // cx * cx, (y - 1) // cy * cy, (z - 1) // cz * cz
        for bx, by, bz in [(0, 0, 0), (x0, y0, z0)]:
            ex, ey, ez = min(bx + cx, x), min(by + cy, y), min(bz + cz, z)
            resp = await client.get(
                f"/precomputed/v/v0/s0/{bx}-{ex}_{by}-{ey}_{bz}-{ez}",
                headers={"Accept-Encoding": "identity"},
            )
            assert resp.status == 200, await resp.text()
            assert "Content-Encoding" not in resp.headers
            body = await resp.read()
            expected = data[:, bz:ez, by:ey, bx:ex]
            np.testing.assert_array_equal(decode(body, dtype, expected.shape), expected)


async def test_coarse_scale_is_block_mean(client, volume_and_data):
    _, data = volume_and_data
    info = await (await client.get("/precomputed/raw/v0/info")).json()
    s1 = info["scales"][1]
    x, y, z = s1["size"]
    cx, cy, cz = s1["chunk_sizes"][0]
    resp = await client.get(f"/precomputed/raw/v0/s1/0-{min(cx, x)}_0-{min(cy, y)}_0-1")
    assert resp.status == 200
    got = decode(await resp.read(), "uint8", (1, 1, min(cy, y), min(cx, x)))
    expected = downsample_mean(data, (1, 2, 2))[:, :1, : min(cy, y), : min(cx, x)]
    np.testing.assert_array_equal(got, expected)


async def test_gzip_when_accepted(client, volume_and_data):
    _, data = volume_and_data
    resp = await client.get(
        "/precomputed/raw/v0/s0/0-256_0-256_0-1",
        headers={"Accept-Encoding": "gzip, deflate"},
        auto_decompress=False,
    )
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    assert "immutable" in resp.headers["Cache-Control"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    raw = gzip.decompress(await resp.read())
    np.testing.assert_array_equal(decode(raw, "uint8", (1, 1, 256, 256)), data[:, :1, :256, :256])


@pytest.mark.parametrize(
    ("chunk", "fragment"),
    [
        ("0-256_0-256", "malformed"),
        ("a-256_0-256_0-1", "malformed"),
        ("0-256_0-256_0-1_0-1", "malformed"),
        ("256-0_0-256_0-1", "empty or reversed"),
        ("0-128_0-256_0-1", "not on the chunk grid"),
        ("10-266_0-256_0-1", "not on the chunk grid"),
        ("256-512_0-256_0-1", "outside"),
        ("0-256_0-256_5-6", "outside"),
        ("0-256_0-256_0-2", "not on the chunk grid"),
    ],
)
async def test_bad_chunk_names_are_400(client, chunk, fragment):
    resp = await client.get(f"/precomputed/raw/v0/s0/{chunk}")
    assert resp.status == 400
    body = await resp.json()
    assert fragment in body["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/precomputed/nope/v0/info",
        "/precomputed/nope/v0/s0/0-256_0-256_0-1",
        "/precomputed/raw/v7/info",
        "/precomputed/raw/v0/s99/0-1_0-1_0-1",
        "/precomputed/raw/v0/x0/0-1_0-1_0-1",
    ],
)
async def test_unknown_layer_version_or_scale_is_404(client, path):
    resp = await client.get(path)
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_versioned_layer_not_ready_then_gone(aiohttp_client, make_app, make_volume):
    layer = VersionedLayer("pred")
    client = await aiohttp_client(make_app([layer]))

    resp = await client.get("/precomputed/pred/v0/info")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "no data yet" in (await resp.json())["error"]

    first, _ = make_volume((1, 2, 20, 20), seed=1)
    second, data2 = make_volume((1, 2, 20, 20), seed=2)
    v1 = layer.publish(first)
    v2 = layer.publish(second)
    assert (v1, v2) == ("v1", "v2")
    resp = await client.get("/precomputed/pred/v1/s0/0-20_0-20_0-1")
    assert resp.status == 410
    assert "superseded" in (await resp.json())["error"]
    resp = await client.get("/precomputed/pred/v2/s0/0-20_0-20_0-1")
    assert resp.status == 200
    np.testing.assert_array_equal(
        decode(await resp.read(), "uint8", (1, 1, 20, 20)), data2[:, :1]
    )
    resp = await client.get("/precomputed/pred/v9/info")
    assert resp.status == 404


async def test_segmentation_layer_keeps_label_values(aiohttp_client, make_app):
    """Coarse label levels vote; the mean pyramid a source comes with is redone."""
    rng = np.random.default_rng(5)
    labels = rng.choice(np.array([0, 1, 3], dtype=np.uint8), size=(1, 4, 300, 300))
    opened = build_pyramid(ArrayVolume(labels, (40, 4, 4)), cache=ArrayCache(2**24),
                           name="labels", method="mean")
    layer = StaticLayer("labels", opened, kind="segmentation", cache=ArrayCache(2**24))
    client = await aiohttp_client(make_app([layer]))
    info = await (await client.get("/precomputed/labels/v0/info")).json()
    assert info["type"] == "segmentation"
    x, y, _ = info["scales"][1]["size"]
    resp = await client.get(f"/precomputed/labels/v0/s1/0-{x}_0-{y}_0-1")
    got = decode(await resp.read(), "uint8", (1, 1, y, x))
    np.testing.assert_array_equal(got, downsample_mode(labels[:, :1], (1, 2, 2)))
    assert set(np.unique(got)) <= {0, 1, 3}


def block_reads(volume) -> tuple[threading.Event, list[Box]]:
    """Make level-0 reads of ``volume`` wait for the returned event; record what was read."""
    release = threading.Event()
    base = volume.base
    original = base._read
    reads: list[Box] = []

    def slow_read(box: Box):
        reads.append(box)
        release.wait(5)
        return original(box)

    base._read = slow_read
    return release, reads


async def test_chunk_read_runs_off_the_event_loop(aiohttp_client, make_app, volume_and_data):
    """A read blocks a worker thread, not the loop: other requests are answered meanwhile."""
    volume, _ = volume_and_data
    client = await aiohttp_client(make_app([StaticLayer("raw", volume)]))
    release, _ = block_reads(volume)
    chunk = asyncio.ensure_future(client.get("/precomputed/raw/v0/s0/0-256_0-256_0-1"))
    health = await asyncio.wait_for(client.get("/api/health"), timeout=2)
    assert health.status == 200
    assert not chunk.done()
    release.set()
    assert (await chunk).status == 200


async def test_disconnected_client_leaves_no_queued_work(aiohttp_client, make_app,
                                                         volume_and_data):
    volume, _ = volume_and_data
    app = make_app([StaticLayer("raw", volume)], threads=1)
    client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})
    release, reads = block_reads(volume)
    busy = asyncio.ensure_future(client.get("/precomputed/raw/v0/s0/0-256_0-256_0-1"))
    while not reads:  # the only worker is now blocked in a read
        await asyncio.sleep(0.01)
    pool = app[CONTEXT_KEY].resources.pool
    queued = asyncio.ensure_future(client.get("/precomputed/raw/v0/s0/256-270_0-256_0-1"))
    await until(lambda: pool.queued()["chunks"] == 1, "the second chunk was never queued")
    queued.cancel()  # the browser dropped the request: the connection closes
    await until(lambda: pool.queued()["chunks"] == 0, "the server never saw the client go")
    release.set()
    assert (await busy).status == 200
    await until(pool.idle, "the pool never went idle")
    assert len(reads) == 1, "the cancelled chunk was still read"
    assert pool.dropped == 1


class _CountingVolume(ArrayVolume):
    """An in-memory volume that counts its reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0

    def _read(self, box):
        self.reads += 1
        return super()._read(box)


async def test_repeated_chunks_are_served_from_the_encoded_cache(aiohttp_client, make_app):
    from ilastik_web.abc import MultiscaleVolume

    data = np.arange(2 * 300 * 270, dtype=np.uint16).reshape(1, 2, 300, 270)
    counting = _CountingVolume(data, (40.0, 4.0, 4.0))
    client = await aiohttp_client(make_app([StaticLayer("c", MultiscaleVolume("c", [counting]))]))
    url = "/precomputed/c/v0/s0/0-256_0-256_1-2"
    bodies = set()
    new_reads = []
    for encoding in ("identity", "identity", "gzip", "gzip"):
        before = counting.reads  # the layer's contrast estimate may read too, at start-up
        resp = await client.get(url, headers={"Accept-Encoding": encoding})
        assert resp.status == 200
        bodies.add(await resp.read())  # aiohttp decodes gzip: all bodies are the same bytes
        new_reads.append(counting.reads - before)
    assert new_reads == [1, 0, 1, 0]  # once per encoding, then from the cache
    assert bodies == {data[0, 1, :256, :256].tobytes()}


async def test_disconnected_client_stops_a_running_computation(aiohttp_client, make_app,
                                                                 volume_and_data):
    """A computed coarse chunk reads many finer blocks; its client leaving stops it."""
    volume, _ = volume_and_data
    app = make_app([StaticLayer("raw", volume)], threads=1)
    client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})
    base = volume.base
    original = base._read
    reads: list[Box] = []

    def slow_read(box: Box):
        reads.append(box)
        # The first block read lasts until the client has gone (polled, generous deadline).
        deadline = time.monotonic() + UNTIL_S
        while not cancel_requested() and time.monotonic() < deadline:
            time.sleep(0.01)
        return original(box)

    base._read = slow_read
    # s1 of this single-level volume is computed from level 0 in 64³ blocks: this chunk
    # needs 9 of them, i.e. 9 slow level-0 reads if it ran to the end.
    request = asyncio.ensure_future(client.get("/precomputed/raw/v0/s1/0-135_0-150_0-1"))
    await until(lambda: reads or request.done(), "the chunk did not start computing")
    assert reads and not request.done(), "the chunk did not start computing"
    request.cancel()
    pool = app[CONTEXT_KEY].resources.pool
    await until(pool.idle, "the computation never stopped")
    assert len(reads) == 1, f"{len(reads)} blocks read after the client left"
