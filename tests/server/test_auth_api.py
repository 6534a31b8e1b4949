"""Access control, error mapping, the JSON API and its OpenAPI document."""

from __future__ import annotations

import pytest
import pytest_asyncio

from ilastik_web.errors import (
    ForbiddenError,
    GoneError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OutOfBoundsError,
    SourceError,
    UnauthenticatedError,
)
from ilastik_web.server.auth import SESSION_COOKIE
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.errors import status_for
from ilastik_web.server.openapi import openapi_document

TOKEN = "s3cret-token"


@pytest_asyncio.fixture
async def locked(aiohttp_client, make_app, raw_layer):
    return await aiohttp_client(make_app([raw_layer], token=TOKEN))


@pytest.mark.parametrize(
    "path", ["/api/sources", "/precomputed/raw/v0/info", "/v/main/", "/events/main?c=x", "/nope"]
)
async def test_token_required(locked, path):
    resp = await locked.get(path)
    assert resp.status == 401
    assert "authentication required" in (await resp.json())["error"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_wrong_token_rejected(locked):
    resp = await locked.get("/api/sources", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401


async def test_bearer_header_accepted(locked):
    resp = await locked.get("/api/sources", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200


async def test_health_is_public(locked):
    resp = await locked.get("/api/health")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_query_token_is_exchanged_for_a_session_cookie(locked):
    resp = await locked.get(f"/v/main/?project=p&token={TOKEN}", allow_redirects=False)
    # The token leaves the URL at once: a redirect to the same page without it.
    assert resp.status == 303
    assert resp.headers["Location"].endswith("/v/main/?project=p")
    assert TOKEN not in resp.headers["Location"]
    cookie = resp.cookies[SESSION_COOKIE]
    assert cookie.value != TOKEN and TOKEN not in cookie.value
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    # the browser's next requests carry only the cookie
    resp = await locked.get("/precomputed/raw/v0/info")
    assert resp.status == 200


async def test_wrong_query_token_is_refused_without_a_cookie(locked):
    resp = await locked.get("/v/main/?token=wrong", allow_redirects=False)
    assert resp.status == 401
    assert SESSION_COOKIE not in resp.cookies


async def test_open_server_needs_no_token(client):
    assert (await client.get("/api/sources")).status == 200


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequestError("x"), 400),
        (OutOfBoundsError("x"), 400),
        (UnauthenticatedError("x"), 401),
        (ForbiddenError("x"), 403),
        (NotFoundError("x"), 404),
        (GoneError("x"), 410),
        (SourceError("x"), 422),
        (NotReadyError("x"), 503),
        (RuntimeError("x"), 500),
    ],
)
def test_error_status_mapping(error, status):
    assert status_for(error) == status


async def test_unknown_route_is_json_404(client):
    resp = await client.get("/no/such/route")
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_sources_listing(client, volume_and_data):
    resp = await client.get("/api/sources")
    assert resp.status == 200
    (source,) = (await resp.json())["sources"]
    assert source["id"] == "raw"
    assert source["shape"] == {"x": 270, "y": 300, "z": 5}
    assert source["shape_zyx"] == [5, 300, 270]
    assert source["dtype"] == "uint8"
    assert source["channels"] == 1
    assert source["voxel_size_nm"] == {"x": 4.0, "y": 4.0, "z": 40.0}
    assert source["levels"][0] == {
        "key": "s0", "shape_zyx": [5, 300, 270], "voxel_size_nm_zyx": [40.0, 4.0, 4.0],
        "native": True,
    }
    assert source["precomputed"] == f"http://{client.host}:{client.port}/precomputed/raw/v0"
    info = await client.get(source["precomputed"].split(str(client.port), 1)[1] + "/info")
    assert info.status == 200


async def test_precomputed_url_behind_a_proxy(client):
    resp = await client.get(
        "/api/sources",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "lab.example.org, inner",
            "X-Forwarded-Prefix": "/ilastik",
        },
    )
    (source,) = (await resp.json())["sources"]
    assert source["precomputed"] == "https://lab.example.org/ilastik/precomputed/raw/v0"


async def test_openapi_lists_every_route(client):
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    registered = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD"
    }
    assert documented == registered
    chunk = document["paths"]["/precomputed/{layer_id}/{version}/{scale_key}/{chunk}"]["get"]
    assert {p["name"] for p in chunk["parameters"]} == {"layer_id", "version", "scale_key", "chunk"}
    assert "503" in chunk["responses"]
    assert document["paths"]["/api/health"]["get"]["security"] == []


def test_openapi_document_from_table(make_app, raw_layer):
    app = make_app([raw_layer])
    table = app[CONTEXT_KEY].table
    document = openapi_document(table)
    assert sum(len(ops) for ops in document["paths"].values()) == len(table)
