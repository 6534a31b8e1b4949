"""One route table: aiohttp routes, access rules and the OpenAPI document come from it.

Each group of routes lives in its own module exposing a function that returns a list of
:class:`Route`; :func:`ilastik_web.server.app.create_app` registers them all, and
:mod:`ilastik_web.server.openapi` documents exactly what was registered, so the document
cannot drift from the routes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from ilastik_web.errors import InvalidRequestError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ParamLocation = Literal["path", "query", "header", "cookie"]


@dataclass(frozen=True)
class Param:
    """One documented request parameter."""

    name: str
    location: ParamLocation = "path"
    description: str = ""
    required: bool = True
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Route:
    """A route with what the access layer and the API document need to know.

    Attributes
    ----------
    method, path
        HTTP method and aiohttp path pattern (``{name}`` segments, no regexes).
    handler
        The aiohttp handler.
    name
        Unique route name (also the OpenAPI ``operationId``).
    summary
        One line for the API document.
    role
        The role the caller needs (see :mod:`ilastik_web.server.auth`): ``"public"``
        (no authentication), ``"user"``, ``"viewer"``, ``"annotator"``, ``"owner"`` or
        ``"admin"``; project roles apply to the route's project.
    cors
        True: any origin may read it (the read-only data other viewers load).
    parameters
        Documented parameters (path parameters are required to be listed).
    responses
        Status code -> description.
    content_type
        Media type of the success body.
    tags
        OpenAPI tags (the route group).
    request_body
        Description of a JSON request body, if any.
    body_schema
        JSON Schema of that body (the document says "any object" when absent).
    """

    method: str
    path: str
    handler: Handler
    name: str
    summary: str
    role: str = "viewer"
    cors: bool = False
    parameters: tuple[Param, ...] = ()
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    content_type: str = "application/json"
    tags: tuple[str, ...] = ()
    request_body: str | None = None
    body_schema: dict[str, Any] | None = None

    @property
    def public(self) -> bool:
        return self.role == "public"


class RouteTable:
    """The routes of one app, by name."""

    def __init__(self, routes: Iterable[Route] = ()):
        self._routes: dict[str, Route] = {}
        self.extend(routes)

    def extend(self, routes: Iterable[Route]) -> None:
        for route in routes:
            if route.name in self._routes:
                raise ValueError(f"duplicate route name {route.name!r}")
            self._routes[route.name] = route

    def get(self, name: str | None) -> Route | None:
        return self._routes.get(name) if name else None

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

    def register(self, app: web.Application) -> None:
        """Add every route to ``app``'s router, named by :attr:`Route.name`."""
        for route in self:
            app.router.add_route(route.method, route.path, route.handler, name=route.name)


def route_of(request: web.Request, table: RouteTable) -> Route | None:
    """The table entry of the route ``request`` matched, if any."""
    return table.get(request.match_info.route.name)


#: Deepest nesting of arrays and objects a request body may have.
MAX_JSON_DEPTH = 64
#: Bodies larger than this are parsed in a worker thread, off the event loop.
_PARSE_INLINE_BYTES = 64 * 1024


async def read_json(request: web.Request, *, max_bytes: int = 16 * 1024 * 1024) -> Any:
    """The request body parsed as JSON (large bodies off the event loop).

    Raises
    ------
    InvalidRequestError
        The body is too large, not valid JSON, holds NaN or Infinity, or nests deeper
        than :data:`MAX_JSON_DEPTH`.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise InvalidRequestError(f"request body over {max_bytes} bytes")
    body = await request.read()
    if len(body) > max_bytes:
        raise InvalidRequestError(f"request body over {max_bytes} bytes")
    if len(body) <= _PARSE_INLINE_BYTES:
        return parse_json(body)
    return await asyncio.get_running_loop().run_in_executor(None, parse_json, body)


def parse_json(body: bytes | str) -> Any:
    """Strict JSON: finite numbers only, nesting at most :data:`MAX_JSON_DEPTH`."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequestError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    _check_depth(value)
    return value


def _refuse_constant(name: str) -> Any:
    raise InvalidRequestError(f"request body is not valid JSON: {name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequestError(f"request body is not valid JSON: {text} is out of range")
    return value


def _check_depth(value: Any) -> None:
    level: list[Any] = [value]
    for _ in range(MAX_JSON_DEPTH + 1):
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return
    raise InvalidRequestError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
