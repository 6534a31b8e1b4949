"""Cross-site writes and CORS: only same-origin JSON changes state; CORS on data routes only.

The browser-level version (a real Chromium page on another loopback port) is in
tests/browser/test_cross_site.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import pytest_asyncio

from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.layers import StaticLayer
from ilastik_web.server.web_safety import is_json_type, is_loopback_host

STROKE = {"points_xyz": [[20.5, 20.5, 5.5]], "radius": 2.0, "label": 1}


@pytest.fixture
def project_app(tmp_path, blob_source):
    def factory(**config):
        resources = Resources(64 * 2**20, threads=2)
        raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
        project = Project.create(tmp_path / "p", raw.volume("v0"), classes=["a", "b"])
        return create_app(ServerConfig(**config), layers=[raw],
                          projects=[("p", project, "raw")], resources=resources)
    return factory


@pytest_asyncio.fixture
async def client(aiohttp_client, project_app):
    return await aiohttp_client(project_app())


def _own(client) -> str:
    return f"http://{client.host}:{client.port}"


async def _revision(client) -> int:
    return (await (await client.get("/api/projects/p")).json())["label_revision"]


@pytest.mark.parametrize("origin", ["http://127.0.0.1:1", "http://evil.example", "null"])
async def test_cross_origin_writes_are_refused(client, origin):
    headers = {"Origin": origin}
    resp = await client.post("/api/projects/p/strokes", json=STROKE, headers=headers)
    assert resp.status == 403
    assert "cross-site" in (await resp.json())["error"]
    resp = await client.post("/api/projects/p/classes", json={"name": "x"}, headers=headers)
    assert resp.status == 403
    resp = await client.post("/api/projects/p/undo", headers=headers)
    assert resp.status == 403
    assert await _revision(client) == 0
    assert len((await (await client.get("/api/projects/p")).json())["classes"]) == 2


async def test_browser_cross_site_fetch_metadata_is_refused(client):
    resp = await client.post("/api/projects/p/strokes", json=STROKE,
                             headers={"Sec-Fetch-Site": "same-site"})
    assert resp.status == 403


async def test_same_origin_json_writes_pass(client):
    resp = await client.post("/api/projects/p/strokes", json=STROKE,
                             headers={"Origin": _own(client), "Sec-Fetch-Site": "same-origin"})
    assert resp.status == 200, await resp.text()
    # and non-browser clients (no Origin, no fetch metadata) too
    resp = await client.post("/api/projects/p/strokes", json=STROKE)
    assert resp.status == 200
    assert await _revision(client) == 2


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
async def test_state_changes_need_a_json_body_type(client, content_type):
    import json
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await client.post("/api/projects/p/strokes", data=json.dumps(STROKE).encode(),
                             headers=headers, skip_auto_headers=["Content-Type"])
    assert resp.status == 415
    assert "application/json" in (await resp.json())["error"]
    assert await _revision(client) == 0


async def test_cross_origin_websocket_is_refused(client):
    import aiohttp
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/projects/p/events", headers={"Origin": "http://x.test"})
    assert info.value.status == 403
    ws = await client.ws_connect("/api/projects/p/events", headers={"Origin": _own(client)})
    assert (await ws.receive_json())["kind"] == "hello"
    await ws.close()


async def test_cors_only_on_read_only_data_routes(client):
    info = await client.get("/precomputed/raw/v0/info", headers={"Origin": "http://x.test"})
    assert info.headers["Access-Control-Allow-Origin"] == "*"
    for path in ("/api/projects", "/api/projects/p", "/api/sources", "/v/main/"):
        resp = await client.get(path, headers={"Origin": "http://x.test"})
        assert "Access-Control-Allow-Origin" not in resp.headers, path
    # Preflights: granted for GET on data, refused for writes and for the API.
    ok = await client.options("/precomputed/raw/v0/s0/0-32_0-32_0-8", headers={
        "Origin": "http://x.test", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert ok.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" not in ok.headers["Access-Control-Allow-Methods"]
    for path, method in (("/api/projects/p/strokes", "POST"), ("/api/projects/p", "GET"),
                         ("/precomputed/raw/v0/info", "POST")):
        resp = await client.options(path, headers={"Origin": "http://x.test",
                                                   "Access-Control-Request-Method": method})
        assert "Access-Control-Allow-Origin" not in resp.headers, path


async def test_open_loopback_server_refuses_foreign_host_names(client):
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 is "same origin".
    resp = await client.get("/api/projects", headers={"Host": "evil.example:8000"})
    assert resp.status == 403
    resp = await client.post("/api/projects/p/strokes", json=STROKE,
                             headers={"Host": "evil.example", "Origin": "http://evil.example"})
    assert resp.status == 403
    assert (await client.get("/api/projects", headers={"Host": "localhost:1"})).status == 200


async def test_token_server_also_refuses_cross_site_writes(aiohttp_client, project_app):
    client = await aiohttp_client(project_app(token="tok"))
    auth = {"Authorization": "Bearer tok"}
    resp = await client.post("/api/projects/p/strokes", json=STROKE,
                             headers={**auth, "Origin": "http://127.0.0.1:1"})
    assert resp.status == 403
    resp = await client.post("/api/projects/p/strokes", json=STROKE, headers=auth)
    assert resp.status == 200


@pytest.mark.parametrize(("value", "expected"), [
    ("application/json", True), ("application/json; charset=utf-8", True),
    ("application/merge-patch+json", True), ("text/plain", False), ("", False),
    ("text/json", False),
])
def test_is_json_type(value, expected):
    assert is_json_type(value) is expected


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1:8000", True), ("localhost", True), ("[::1]:80", True), ("127.5.0.1", True),
    ("a.localhost:1", True), ("evil.example", False), ("10.0.0.1:80", False),
    ("127.0.0.1.evil.example", False),
])
def test_is_loopback_host(host, expected):
    assert is_loopback_host(host) is expected


def test_token_is_never_logged(tmp_path):
    """``serve --token`` prints the URL with the token to stdout; its log never has it."""
    import socket

    import numpy as np
    import tifffile

    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.zeros((2, 16, 16), np.uint8))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "very-secret-token-123"
    process = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", str(path), "--port", str(port),
         "--no-browser", "--token", secret, "--no-project", "--log-level", "DEBUG"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.endswith(f"?token={secret}")
        import http.cookiejar
        import urllib.request
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(f"http://127.0.0.1:{port}/v/main/?token={secret}") as r:
            assert r.status == 200
            assert secret not in r.url  # redirected without it
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "viewer at" in stderr
    assert secret not in stderr
    logging.getLogger(__name__).debug("server log: %s", stderr[-2000:])
