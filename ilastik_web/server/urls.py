"""Absolute URLs as the client sees them, also behind a reverse proxy.

The proxy tells us the outside scheme, host and path prefix through
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` (first value of
each when a chain of proxies appended several). Without them the ``Host`` header is used.
"""

from __future__ import annotations

import re

from aiohttp import web

_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)*$")


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[0].strip() or None


def is_secure(request: web.Request) -> bool:
    proto = _first(request.headers.get("X-Forwarded-Proto"))
    return (proto or request.scheme).lower() == "https"


def base_url(request: web.Request) -> str:
    """``scheme://host[/prefix]`` of this server as the client reached it, no trailing slash."""
    scheme = "https" if is_secure(request) else "http"
    host = _first(request.headers.get("X-Forwarded-Host")) or request.host
    if not _HOST.match(host):
        host = request.url.host or "localhost"
    prefix = (_first(request.headers.get("X-Forwarded-Prefix")) or "").rstrip("/")
    if not _PREFIX.match(prefix):
        prefix = ""
    return f"{scheme}://{host}{prefix}"
