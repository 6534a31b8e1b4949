"""Creating a project from the browser: paths under the roots, URLs behind the SSRF guard."""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest
import pytest_asyncio
import tifffile

from ilastik_web.config import ServerConfig
from ilastik_web.errors import ForbiddenError, InvalidRequestError
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.auth import SESSION_COOKIE, Principal
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.url_guard import check_data_url

OPERATOR = {"Authorization": "Bearer op"}


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/x.zarr", "http://localhost/x", "http://[::1]/x",
    "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x",
])
def test_local_addresses_are_refused(url):
    with pytest.raises(ForbiddenError):
        check_data_url(url)


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "http:///x",
                                 "http://user:pw@example.org/x", "http://example.org:99999/x"])
def test_malformed_urls_are_refused(url):
    with pytest.raises(InvalidRequestError):
        check_data_url(url)


def test_allow_list_and_local_opt_in():
    with pytest.raises(ForbiddenError, match="list of data hosts"):
        check_data_url("http://127.0.0.1/x", allowed_hosts=["*.example.org"])
    assert check_data_url("http://127.0.0.1:1/x", allowed_hosts=["127.0.0.1"],
                          allow_local=True)


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "allowed"
    root.mkdir()
    tifffile.imwrite(root / "v.tif", np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32),
                     photometric="minisblack")
    outside = tmp_path / "outside"
    outside.mkdir()
    tifffile.imwrite(outside / "secret.tif", np.ones((2, 8, 8), np.uint8),
                     photometric="minisblack")
    (root / "link.tif").symlink_to(outside / "secret.tif")
    return tmp_path


@pytest_asyncio.fixture
async def make_client(aiohttp_client, data):
    async def factory(**config):
        settings = dict(token="op", allowed_roots=(data / "allowed",),
                        projects_dir=data / "projects")
        settings.update(config)
        app = create_app(ServerConfig(**settings), resources=Resources(32 << 20, threads=2))
        return await aiohttp_client(app)
    return factory


async def test_operator_creates_from_a_path_and_it_is_listed(make_client, data):
    client = await make_client()
    resp = await client.post("/api/projects", headers=OPERATOR, json={
        "id": "new", "source": str(data / "allowed" / "v.tif"), "classes": ["a", "b", "c"]})
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["role"] == "owner" and created["shape_xyz"] == [32, 32, 2]
    assert [c["name"] for c in created["classes"]] == ["a", "b", "c"]
    assert (data / "projects" / "new" / "project.json").exists()
    listing = await (await client.get("/api/projects", headers=OPERATOR)).json()
    assert [p["id"] for p in listing["projects"]] == ["new"]
    stroke = {"points_xyz": [[5.5, 5.5, 0.5]], "radius": 1, "label": 1}
    assert (await client.post("/api/projects/new/strokes", json=stroke,
                              headers=OPERATOR)).status == 200
    again = await client.post("/api/projects", headers=OPERATOR, json={
        "id": "new", "source": str(data / "allowed" / "v.tif")})
    assert again.status == 400


@pytest.mark.parametrize("name", ["outside/secret.tif", "allowed/link.tif",
                                  "allowed/../outside/secret.tif"])
async def test_paths_outside_the_roots_are_refused(make_client, data, name):
    client = await make_client()
    resp = await client.post("/api/projects", headers=OPERATOR,
                             json={"id": "x", "source": str(data / name)})
    assert resp.status == 403, await resp.text()


async def test_without_roots_only_urls(make_client, data):
    client = await make_client(allowed_roots=())
    resp = await client.post("/api/projects", headers=OPERATOR,
                             json={"id": "x", "source": str(data / "allowed" / "v.tif")})
    assert resp.status == 403 and "URLs only" in (await resp.json())["error"]


async def test_a_signed_in_user_creates_and_owns_it(make_client, data):
    client = await make_client()
    access = client.app[CONTEXT_KEY].access
    cookie = access.sessions.create(Principal("user:u1", "Una", user_id="u1"))
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
    resp = await client.post("/api/projects", json={
        "id": "mine", "source": str(data / "allowed" / "v.tif")})
    assert resp.status == 201, await resp.text()
    assert access.accounts.role_of("u1", "mine") == "owner"
    me = await (await client.get("/api/me")).json()
    assert me["projects"] == {"mine": "owner"}


@pytest.fixture
def zarr_over_http(tmp_path):
    """A zarr array served over HTTP on loopback."""
    import zarr

    folder = tmp_path / "web"
    array = zarr.create_array(str(folder / "vol.zarr"), shape=(2, 16, 16), chunks=(2, 16, 16),
                              dtype="uint8")
    array[:] = 7
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/vol.zarr"
    server.shutdown()


async def test_urls_to_loopback_are_refused_unless_allowed(make_client, zarr_over_http):
    client = await make_client()
    resp = await client.post("/api/projects", headers=OPERATOR,
                             json={"id": "u", "source": zarr_over_http})
    assert resp.status == 403 and "loopback" in (await resp.json())["error"]
    client = await make_client(allow_local_urls=True, url_hosts=("127.0.0.1",))
    resp = await client.post("/api/projects", headers=OPERATOR,
                             json={"id": "u", "source": zarr_over_http})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["shape_xyz"][:2] == [16, 16]
