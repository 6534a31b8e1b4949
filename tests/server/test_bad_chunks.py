"""A bad chunk is one bad chunk: served as a fill with a header, logged once, listed as a
notice; the contrast estimate and the server survive it. HTTP sources that answer 5xx or
never answer get bounded retries, then the same treatment."""

from __future__ import annotations

import functools
import http.server
import logging
import threading

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.cache import ArrayCache
from ilastik_web.damage import DamageLog, read_tolerant
from ilastik_web.errors import ChunkReadError
from ilastik_web.server.layers import StaticLayer
from ilastik_web.server.routes_precomputed import FILL_HEADER
from ilastik_web.sources import _tensorstore, open_source

# Viewer chunks of 256 x 256 x 1 (y x z) on a 128 x 128 volume: the whole slice.


def chunk_url(layer, z):
    return f"/precomputed/{layer}/v0/s0/0-128_0-128_{z}-{z + 1}"


def test_read_tolerant_fills_only_the_bad_chunk(corrupt_zarr):
    path, data, bad = corrupt_zarr
    level = open_source(str(path)).base
    with pytest.raises(ChunkReadError) as raised:
        level.read(Box((16, 0, 0), (17, 128, 128)))
    assert raised.value.chunks == (bad,)
    assert str(path) in str(raised.value)
    result = read_tolerant(level, Box((16, 0, 0), (17, 128, 128)))
    assert result.filled == (Box((16, 0, 64), (17, 64, 128)),)
    out = result.data[0, 0]
    assert (out[:64, 64:] == 0).all()
    np.testing.assert_array_equal(out[:64, :64], data[16, :64, :64])
    np.testing.assert_array_equal(out[64:], data[16, 64:])
    assert result.valid_mask(Box((16, 0, 0), (17, 128, 128))).sum() == 128 * 128 - 64 * 64


def test_damage_log_logs_each_chunk_once(corrupt_zarr, caplog):
    path, _, bad = corrupt_zarr
    level = open_source(str(path)).base
    damage = DamageLog()
    with caplog.at_level(logging.WARNING, logger="ilastik_web.damage"):
        for z in (16, 17, 20):
            damage.record(read_tolerant(level, Box((z, 0, 0), (z + 1, 128, 128))).errors)
    assert len(damage) == 1
    assert [c.box for c in damage.list()] == [bad]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(path) in lines[0] and "unreadable" in lines[0]


def test_contrast_estimate_tolerates_a_bad_chunk(corrupt_zarr, caplog):
    path, data, _ = corrupt_zarr
    layer = StaticLayer("vol", open_source(str(path)), cache=ArrayCache(2**24))
    with caplog.at_level(logging.WARNING):
        low, high = layer.display.contrast_range
    assert 100 <= low < high <= 4000
    warnings = [r for r in caplog.records if "contrast" in r.getMessage()]
    assert len(warnings) == 1


async def test_bad_chunk_is_served_as_a_fill_with_a_notice(aiohttp_client, make_app,
                                                           corrupt_zarr, caplog):
    path, data, bad = corrupt_zarr
    layer = StaticLayer("vol", open_source(str(path)), cache=ArrayCache(2**24),
                        location=str(path))
    client = await aiohttp_client(make_app([layer]))
    notices = await (await client.get("/api/notices")).json()
    assert notices["bad_chunks"] == []

    good = await client.get(chunk_url("vol", 3))
    assert good.status == 200 and FILL_HEADER not in good.headers
    with caplog.at_level(logging.WARNING, logger="ilastik_web.damage"):
        for _ in range(2):
            response = await client.get(chunk_url("vol", 17))
            assert response.status == 200
            assert "Zstd" in response.headers[FILL_HEADER] or "zstd" in \
                response.headers[FILL_HEADER].lower()
            assert response.headers["Cache-Control"] == "no-store"
            body = np.frombuffer(await response.read(), np.uint16).reshape(128, 128)
            assert (body[:64, 64:] == 0).all()
            np.testing.assert_array_equal(body[64:], data[17, 64:])
    assert len([r for r in caplog.records if r.name == "ilastik_web.damage"]) == 1

    notices = await (await client.get("/api/notices")).json()
    (entry,) = notices["bad_chunks"]
    assert entry["source"] == str(path)
    assert entry["start"] == list(bad.start) and entry["stop"] == list(bad.stop)
    assert entry["region"] == "z 16-32, y 0-64, x 64-128"
    # the server still answers, and coarser (computed) levels fill only their share
    assert (await client.get("/api/health")).status == 200
    coarse = await client.get("/precomputed/vol/v0/s1/0-64_0-64_8-9")
    assert coarse.status == 200 and FILL_HEADER in coarse.headers


class _FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Files of a folder; chunk ``0.0.1`` answers 503, ``0.1.0`` never answers."""

    requests: dict[str, int] = {}
    release = threading.Event()

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.requests[name] = self.requests.get(name, 0) + 1
        if name == "0.0.1":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if name == "0.1.0":
            self.release.wait(60)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_http(corrupt_zarr, monkeypatch):
    path, data, _ = corrupt_zarr
    _FlakyHandler.requests = {}
    _FlakyHandler.release = threading.Event()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_FlakyHandler, directory=str(path.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(_tensorstore, "HTTP_READ_TIMEOUT_S", 2.5)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/vol.zarr", data
    finally:
        _FlakyHandler.release.set()
        server.shutdown()


@pytest.mark.slow  # waits out the read timeout a few times (~20 s)
async def test_http_5xx_and_timeouts_become_notices(aiohttp_client, make_app, flaky_http):
    url, data = flaky_http
    layer = StaticLayer("remote", open_source(url), cache=ArrayCache(2**24), location=url)
    client = await aiohttp_client(make_app([layer]))
    _FlakyHandler.requests.clear()  # count the attempts of this one chunk request
    response = await client.get(chunk_url("remote", 2))
    assert response.status == 200
    assert "503" in response.headers[FILL_HEADER]
    body = np.frombuffer(await response.read(), np.uint16).reshape(128, 128)
    assert (body[:64, 64:] == 0).all() and (body[64:, :64] == 0).all()  # 503 and timeout
    np.testing.assert_array_equal(body[:64, :64], data[2, :64, :64])
    np.testing.assert_array_equal(body[64:, 64:], data[2, 64:, 64:])
    # bounded retries: each of the few reads (slice, then piece) tries 1 + max_retries times
    attempts = _FlakyHandler.requests["0.0.1"]
    assert 2 <= attempts <= 4 * (1 + _tensorstore.HTTP_RETRIES["max_retries"])
    notices = await (await client.get("/api/notices")).json()
    reasons = {e["region"]: e["reason"] for e in notices["bad_chunks"]}
    assert "z 0-16, y 0-64, x 64-128" in reasons
    assert "no answer within 2.5 s" in reasons["z 0-16, y 64-128, x 0-64"]
    assert "503" in reasons["z 0-16, y 0-64, x 64-128"]


def test_chunk_read_error_survives_pickling(corrupt_zarr):
    """It travels back from dask workers with its source, chunks and reason."""
    import pickle

    path, _, bad = corrupt_zarr
    level = open_source(str(path)).base
    with pytest.raises(ChunkReadError) as raised:
        level.read(level.bounds)
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (copy.location, copy.chunks, copy.reason, str(copy)) == (
        raised.value.location, (bad,), raised.value.reason, str(raised.value))
