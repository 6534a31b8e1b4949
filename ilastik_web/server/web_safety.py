"""Browser-facing safety: no cross-site writes, CORS only on read-only data routes.

A web page the user opens elsewhere (another site, or another port of 127.0.0.1, which
SameSite cookies do not tell apart) can make the browser send requests to this server.
Three rules keep it out:

- a state-changing request (any method but GET/HEAD/OPTIONS) and a WebSocket upgrade must
  come from this server's own origin: a browser's ``Origin`` header (or, without one, its
  ``Sec-Fetch-Site``) must say so; clients that are not browsers send neither and pass;
- a state-changing request with a body must declare a JSON content type, which a page
  elsewhere can only send after a CORS preflight, and preflights are refused for it;
- CORS (``Access-Control-Allow-Origin: *``) is granted only to routes declared
  ``cors=True``: the read-only precomputed data other Neuroglancer instances load.

On a server without authentication bound to loopback, a ``Host`` header naming anything
but loopback is refused as well (DNS rebinding would otherwise make a page "same origin").
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from ilastik_web.errors import ForbiddenError
from ilastik_web.server.routing import RouteTable, route_of
from ilastik_web.server.urls import base_url

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_SITE_FETCH = frozenset({"same-origin", "none"})
_PATH_PARAM = re.compile(r"\{[^}]+\}")


def is_json_type(content_type: str) -> bool:
    """True for ``application/json`` and ``application/*+json``."""
    main = content_type.split(";")[0].strip().lower()
    return main == "application/json" or (main.startswith("application/")
                                          and main.endswith("+json"))


def own_origin(request: web.Request) -> str:
    """``scheme://host[:port]`` of this server as the client reached it."""
    base = base_url(request)
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}".lower()


def _normalised_origin(origin: str) -> str:
    origin = origin.strip().lower().rstrip("/")
    for scheme, port in (("http", ":80"), ("https", ":443")):
        if origin.startswith(scheme + "://") and origin.endswith(port):
            return origin[: -len(port)]
    return origin


def check_same_origin(request: web.Request) -> None:
    """Raise ForbiddenError unless ``request`` comes from this server's origin (or no browser).

    Raises
    ------
    ForbiddenError
        The Origin is another one (``null`` included), or the browser says cross-site.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        if _normalised_origin(origin) != _normalised_origin(own_origin(request)):
            raise ForbiddenError(
                f"cross-site request refused: origin {origin!r} is not this server")
        return
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() not in _SAME_SITE_FETCH:
        raise ForbiddenError(f"cross-site request refused (Sec-Fetch-Site: {fetch_site})")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` names and loopback addresses (with or without a port)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def safety_middleware(table: RouteTable, *, loopback_only: bool = False):
    """The same-origin, content-type and (optionally) loopback-Host checks.

    Parameters
    ----------
    table
        The app's routes (to tell WebSocket routes apart).
    loopback_only
        Refuse ``Host`` headers that are not loopback (open servers on 127.0.0.1).
    """

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if loopback_only and not is_loopback_host(request.host):
            raise ForbiddenError(
                f"host {request.host!r} refused: this server without authentication answers "
                "only to localhost names (use --token or accounts to serve other hosts)")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method not in SAFE_METHODS or upgrade:
            check_same_origin(request)
        if request.method not in SAFE_METHODS and request.body_exists:
            if not is_json_type(request.headers.get("Content-Type", "")):
                raise web.HTTPUnsupportedMediaType(
                    text="state-changing requests must send Content-Type: application/json")
        return await handler(request)

    return middleware


def cors_middleware(table: RouteTable):
    """CORS for the routes declared ``cors=True`` only; GET (and HEAD) from any origin.

    Preflights are answered for those routes alone (with ``Authorization`` allowed, for
    viewers elsewhere that hold a bearer token); any other preflight gets no CORS headers,
    so the browser refuses the cross-origin request.
    """
    patterns = [re.compile("^" + _PATH_PARAM.sub("[^/]+", re.escape(route.path)
                                                 .replace(r"\{", "{").replace(r"\}", "}"))
                           + "$")
                for route in table if route.cors]

    def open_path(path: str) -> bool:
        return any(p.match(path) for p in patterns)

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            wanted = request.headers["Access-Control-Request-Method"].upper()
            if wanted in ("GET", "HEAD") and open_path(request.path):
                return web.Response(status=204, headers={
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization",
                    "Access-Control-Max-Age": "600",
                })
            return web.Response(status=204)
        route = route_of(request, table)
        if route is None or not route.cors:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers["Access-Control-Allow-Origin"] = "*"
            raise
        if not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    return middleware
