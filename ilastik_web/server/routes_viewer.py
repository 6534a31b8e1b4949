"""HTTP routes of the viewer: the client's files and its server protocol.

The bundled client only boots under ``/v/<token>/`` and talks back to the same origin
(with any path prefix before ``/v/`` kept, so a reverse proxy may mount us under a sub-path):

- ``GET /events/<token>?c=<client>&gc=<gen>&gs=<gen>``: server-sent events, one
  ``data: {"k": key, "s": state, "g": generation}`` message whenever a state's generation
  differs from the one the client last saw (never echoing a client's own change);
- ``POST /state/<token>`` with ``{"s": state, "g": client gen, "pg": base gen, "c":
  client}``: answers ``{"g": new generation}``; a change on a stale but recent base is
  rebased onto the current state (and pushed back), only a forgotten base gets 412;
- ``POST /action/<token>`` with ``{"action": name, "state": {...}}``;
- ``POST /credentials/<token>``: we hand out none (403).
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Executor

from aiohttp import web

from ilastik_web.errors import ForbiddenError, InvalidRequestError
from ilastik_web.server.auth import LOCAL_USER, principal_of, still_allowed
from ilastik_web.server.routes_precomputed import accepts_gzip
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.server.urls import base_url
from ilastik_web.server.viewer_sessions import GenerationConflictError, ViewerSessions
from ilastik_web.server.viewer_state import canonicalize, localize
from neuroglancer_ext.static import StaticClient

log = logging.getLogger(__name__)

#: Seconds between keep-alive comments on an idle event stream (proxies drop silent ones).
KEEPALIVE_S = 15.0
#: Seconds between checks that the caller is still allowed in (revoked links end streams).
RECHECK_S = 2.0
_TOKEN = Param("viewer_token", description="Viewer session id (the default session is 'main')")


def viewer_routes(
    sessions: ViewerSessions,
    client: StaticClient,
    executor: Executor,
    *,
    keepalive_s: float = KEEPALIVE_S,
) -> list[Route]:
    """Routes serving ``client`` and synchronising state with ``sessions``."""

    def session_of(request: web.Request):
        """The caller's own copy of the session in the URL (the shared one for the single
        local user of an open server)."""
        principal = principal_of(request)
        viewer_id = None if principal.id == LOCAL_USER.id else principal.id
        return sessions.for_viewer(request.match_info["viewer_token"], viewer_id)

    def send_file(request: web.Request, name: str) -> web.Response:
        session_of(request)
        file = client.get(name)
        headers = {"Cache-Control": "public, max-age=31536000, immutable" if file.immutable
                   else "no-cache"}
        body = file.body
        if file.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
            if accepts_gzip(request):
                body = file.gzipped
                headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, content_type=file.content_type, headers=headers)

    async def redirect_to_index(request: web.Request) -> web.Response:
        session_of(request)
        # A relative target keeps any reverse-proxy prefix and the query (e.g. ?token=).
        target = request.match_info["viewer_token"] + "/"
        if request.query_string:
            target += "?" + request.query_string
        raise web.HTTPFound(target)

    async def get_index(request: web.Request) -> web.Response:
        return send_file(request, "index.html")

    async def get_file(request: web.Request) -> web.Response:
        return send_file(request, request.match_info["name"])

    async def get_events(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        client_id = request.query.get("c")
        if not client_id:
            raise InvalidRequestError("missing client id query parameter 'c'")
        last_seen = {key: request.query.get(f"g{key}") for key in session.states}
        origin = base_url(request)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
            }
        )
        await response.prepare(request)
        subscriber = session.subscribe()
        try:
            while not session.closed and still_allowed(request):
                subscriber.event.clear()
                for key, tracked in session.states.items():
                    state, generation = tracked.snapshot()
                    if generation == last_seen[key] or generation.startswith(client_id + "/"):
                        continue
                    last_seen[key] = generation
                    message = localize(
                        json.dumps({"k": key, "s": state, "g": generation}), origin
                    )
                    await response.write(f"data: {message}\n\n".encode())
                try:
                    await asyncio.wait_for(subscriber.event.wait(),
                                           timeout=min(keepalive_s, RECHECK_S))
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, ConnectionError):
            log.debug("event stream of %s closed by the client", client_id)
        finally:
            session.unsubscribe(subscriber)
        return response

    async def post_state(request: web.Request) -> web.Response:
        session = session_of(request)
        message = await read_json(request)
        if not isinstance(message, dict) or not isinstance(message.get("s"), dict):
            raise InvalidRequestError("expected {'s': state, 'g': gen, 'pg': gen, 'c': client}")
        client_id, generation, base = message.get("c"), message.get("g"), message.get("pg")
        if not isinstance(client_id, str) or not client_id or generation is None:
            raise InvalidRequestError("state update needs a client id 'c' and a generation 'g'")
        state = canonicalize(message["s"], base_url(request))
        try:
            new = session.shared.post(
                state,
                generation=f"{client_id}/{generation}",
                base=str(base) if base is not None else None,
            )
        except GenerationConflictError:
            return web.Response(status=412, text="")
        return web.json_response({"g": new})

    async def post_action(request: web.Request) -> web.Response:
        session = session_of(request)
        message = await read_json(request)
        if not isinstance(message, dict) or not isinstance(message.get("action"), str):
            raise InvalidRequestError("expected {'action': name, 'state': {...}}")
        state = message.get("state") if isinstance(message.get("state"), dict) else {}
        loop = asyncio.get_running_loop()
        ran = await loop.run_in_executor(
            executor, session.invoke_action, message["action"], state
        )
        if not ran:
            log.debug("action %r has no handler", message["action"])
        return web.Response(text="")

    async def post_credentials(request: web.Request) -> web.Response:
        session_of(request)
        raise ForbiddenError("this server hands out no data-source credentials")

    tags = ("viewer",)
    return [
        Route("GET", "/v/{viewer_token}", redirect_to_index, name="viewer_redirect",
              summary="Redirect to the viewer page", parameters=(_TOKEN,),
              responses={302: "Redirect to /v/{viewer_token}/"}, content_type="text/html",
              tags=tags),
        Route("GET", "/v/{viewer_token}/", get_index, name="viewer_index",
              summary="The Neuroglancer viewer page (?token= sets the access cookie)",
              parameters=(_TOKEN, Param("token", "query", "Access token", required=False)),
              content_type="text/html", tags=tags),
        Route("GET", "/v/{viewer_token}/{name}", get_file, name="viewer_file",
              summary="A file of the bundled Neuroglancer client",
              parameters=(_TOKEN, Param("name", description="Client file name")),
              responses={200: "The file", 404: "No such file"},
              content_type="application/octet-stream", tags=tags),
        Route("GET", "/events/{viewer_token}", get_events, name="viewer_events",
              summary="Server-sent viewer state updates",
              parameters=(
                  _TOKEN,
                  Param("c", "query", "Client id"),
                  Param("gs", "query", "Viewer-state generation the client has",
                        required=False),
                  Param("gc", "query", "Config-state generation the client has",
                        required=False),
              ),
              responses={200: "An event stream"}, content_type="text/event-stream",
              tags=tags),
        Route("POST", "/state/{viewer_token}", post_state, name="viewer_state",
              summary="A client's viewer-state change", role="viewer",
              parameters=(_TOKEN,), request_body="{s: state, g: generation, pg: base, c: client}",
              body_schema={"type": "object", "required": ["s", "g", "c"], "properties": {
                  "s": {"type": "object"}, "c": {"type": "string", "minLength": 1},
                  "g": {"type": ["string", "integer"]},
                  "pg": {"type": ["string", "integer", "null"]}}},
              responses={200: "{g: new generation}", 400: "Malformed", 412: "Stale base"},
              tags=tags),
        Route("POST", "/action/{viewer_token}", post_action, name="viewer_action",
              summary="A client-triggered viewer action", role="annotator",
              parameters=(_TOKEN,), request_body="{action: name, state: {...}}",
              body_schema={"type": "object", "required": ["action"], "properties": {
                  "action": {"type": "string"}, "state": {"type": "object"}}},
              responses={200: "Handled", 400: "Malformed"}, tags=tags),
        Route("POST", "/credentials/{viewer_token}", post_credentials,
              name="viewer_credentials", summary="Data-source credentials (none are given)",
              parameters=(_TOKEN,), responses={403: "No credentials"}, tags=tags),
    ]
