"""The one place where API errors become HTTP responses.

Every handler raises the exceptions of :mod:`ilastik_web.errors`; the middleware here
turns them into ``{"error": "..."}`` bodies with the status of :data:`STATUS_BY_ERROR`.
Anything else is a bug: logged with its traceback and answered 500.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ilastik_web.errors import (
    ConflictError,
    ForbiddenError,
    GoneError,
    IlastikWebError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OutOfBoundsError,
    SourceError,
    StorageError,
    TooManyRequestsError,
    UnauthenticatedError,
)

log = logging.getLogger(__name__)

#: Checked in order, so subclasses come before their bases.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (GoneError, 410),
    (ConflictError, 409),
    (StorageError, 507),
    (NotReadyError, 503),
    (TooManyRequestsError, 429),
    (OutOfBoundsError, 400),
    (InvalidRequestError, 400),
    (SourceError, 422),
)

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_S = 1


def status_for(error: BaseException) -> int:
    """The HTTP status for an API error (500 for anything unexpected)."""
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


def json_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error response ``{"error": message}``."""
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


def response_for(error: BaseException) -> web.Response:
    """The response for an exception a handler raised."""
    status = status_for(error)
    headers: dict[str, str] = {}
    if status in (429, 503, 507):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ilastik-web"'
    if status == 500:
        return json_error(500, f"internal server error ({type(error).__name__})")
    return json_error(status, str(error) or type(error).__name__, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Map exceptions to JSON error responses; aiohttp's own HTTP errors get JSON bodies too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return json_error(exc.status, message, headers=_passthrough_headers(exc))
    except IlastikWebError as exc:
        if status_for(exc) == 500:
            log.exception("unmapped API error on %s %s", request.method, request.path)
        return response_for(exc)
    except ConnectionResetError:  # the client went away; nobody to answer
        raise
    except Exception as exc:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return response_for(exc)


def _passthrough_headers(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Location", "Retry-After", "WWW-Authenticate")
    return {k: v for k, v in exc.headers.items() if k in keep}
