"""Access control: one middleware, a :class:`Principal` per request, a policy object.

Every route passes through :func:`auth_middleware`. The policy authenticates the request
(who is this?) and authorises the route's permission (may they?). Today there are two
policies — open (bound to 127.0.0.1, nobody to keep out) and a shared bearer token —
and users with roles slot in as another :class:`AccessPolicy`.
"""

from __future__ import annotations

import hmac
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

from aiohttp import web

from ilastik_web.errors import ForbiddenError, UnauthenticatedError
from ilastik_web.server.routing import RouteTable, route_of
from ilastik_web.server.urls import is_secure

log = logging.getLogger(__name__)

#: Cookie that carries the token for the browser's own requests (chunks, events).
TOKEN_COOKIE = "ilastik_web_token"
#: Query parameter accepted in place of the Authorization header.
TOKEN_QUERY = "token"
#: The request key under which handlers find the :class:`Principal`.
PRINCIPAL_KEY = "principal"

PERMISSIONS = ("read", "write", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is making a request, and what they may do."""

    name: str
    roles: frozenset[str]

    def can(self, permission: str) -> bool:
        return "admin" in self.roles or permission in self.roles


LOCAL_USER = Principal("local", frozenset({"admin"}))
ANONYMOUS = Principal("anonymous", frozenset())


@dataclass(frozen=True)
class Authentication:
    """The result of authenticating a request."""

    principal: Principal
    #: The token arrived as a query parameter, so the browser should get it as a cookie.
    set_cookie: str | None = None


class AccessPolicy(ABC):
    """Decides who a request comes from and whether they may use a route."""

    @abstractmethod
    def authenticate(self, request: web.Request) -> Authentication | None:
        """The caller, or None when the request carries no valid credentials."""

    def authorize(self, principal: Principal, permission: str) -> None:
        """Raise ForbiddenError unless ``principal`` has ``permission``."""
        if not principal.can(permission):
            raise ForbiddenError(f"{principal.name} may not {permission} here")


class OpenPolicy(AccessPolicy):
    """Everyone is the local user (the default: the server binds to 127.0.0.1)."""

    def authenticate(self, request: web.Request) -> Authentication:
        return Authentication(LOCAL_USER)


class TokenPolicy(AccessPolicy):
    """One shared secret, from ``Authorization: Bearer``, the cookie, or ``?token=``.

    Parameters
    ----------
    token
        The secret; whoever presents it acts as :data:`LOCAL_USER`.
    """

    def __init__(self, token: str):
        if not token:
            raise ValueError("the access token must not be empty")
        self._token = token.encode()

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def authenticate(self, request: web.Request) -> Authentication | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self._matches(value.strip()):
            return Authentication(LOCAL_USER)
        if self._matches(request.cookies.get(TOKEN_COOKIE)):
            return Authentication(LOCAL_USER)
        query_token = request.query.get(TOKEN_QUERY)
        if self._matches(query_token):
            return Authentication(LOCAL_USER, set_cookie=query_token)
        return None


def policy_for_token(token: str | None) -> AccessPolicy:
    """TokenPolicy when a token is given, else OpenPolicy."""
    return TokenPolicy(token) if token else OpenPolicy()


def auth_middleware(policy: AccessPolicy, table: RouteTable):
    """The middleware every request passes through.

    Public routes and CORS preflights skip authentication; everything else, unknown
    paths included, needs credentials the policy accepts and the route's permission.
    """

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        route = route_of(request, table)
        if request.method == "OPTIONS" or (route is not None and route.public):
            request[PRINCIPAL_KEY] = ANONYMOUS
            return await handler(request)
        auth = policy.authenticate(request)
        if auth is None:
            raise UnauthenticatedError(
                "authentication required: send 'Authorization: Bearer <token>' or open the "
                "viewer URL with ?token=<token>"
            )
        policy.authorize(auth.principal, route.permission if route is not None else "read")
        request[PRINCIPAL_KEY] = auth.principal
        response = await handler(request)
        if auth.set_cookie is not None and not response.prepared:
            response.set_cookie(
                TOKEN_COOKIE,
                auth.set_cookie,
                path="/",
                httponly=True,
                samesite="Strict",
                secure=is_secure(request),
            )
        return response

    return middleware
