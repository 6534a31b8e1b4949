"""Access control, in one place: who is asking (:class:`Principal`) and may they (roles).

Every request passes through :func:`auth_middleware`. Each :class:`~.routing.Route`
declares the role it needs:

- ``public``: nobody is asked (health check);
- ``user``: anyone with credentials (start page, ``/api/me``);
- ``account``: a signed-in person (a user account) or the operator (creating projects);
- ``viewer`` / ``annotator`` / ``owner``: that role (or a higher one) on the route's
  project: the ``{project_id}`` of its path, the project a ``{layer_id}`` belongs to, or,
  for routes of no project, on at least one project;
- ``admin``: the server's operator (``--token``, or anyone on an open localhost server).

Credentials, checked in this order:

1. ``Authorization: Bearer <token>``: the operator token or a share-link token (scripts);
2. the session cookie (HttpOnly, SameSite=Strict) that browsers get in exchange for a
   ``?token=`` in a page URL; the page is then reloaded without it, so the secret leaves
   the address bar, the history and the viewer state at once;
3. on a server without token or accounts bound to loopback, everyone is the operator.

Share links are resolved again on every request, so revoking one stops it at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from yarl import URL

from ilastik_web.accounts import Accounts, best_role, role_rank
from ilastik_web.errors import ForbiddenError, UnauthenticatedError
from ilastik_web.server.limits import Limits, UserLimits
from ilastik_web.server.routing import RouteTable, route_of
from ilastik_web.server.urls import base_url, is_secure

log = logging.getLogger(__name__)

#: The browser's session cookie (an opaque id; the server keeps only its hash).
SESSION_COOKIE = "ilastik_web_session"
#: Query parameter of page URLs carrying a token to exchange for the cookie.
TOKEN_QUERY = "token"
#: The request key of a function that says whether the caller is still allowed the route
#: (long-lived streams ask it as they go: a revoked link ends them).
RECHECK_KEY: web.RequestKey[Callable[[], bool]] = web.RequestKey("recheck", "Callable")
#: The request key under which handlers find the :class:`Principal`.
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("principal", "Principal")
#: Route roles; project roles are those of :mod:`ilastik_web.accounts`.
ROUTE_ROLES = ("public", "user", "account", "viewer", "annotator", "owner", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is making a request.

    Attributes
    ----------
    id
        Stable per person or browser: ``local``, ``user:<id>``, ``guest:<id>`` or
        ``link:<id>`` (a bearer share token); strokes record it as their author.
    name
        For people to read (the side panel's list of who is on a project).
    admin
        The operator: owner of every project.
    user_id
        The account, when signed in.
    links
        Share links this browser has opened.
    """

    id: str
    name: str
    admin: bool = False
    user_id: str | None = None
    links: frozenset[str] = frozenset()


LOCAL_USER = Principal("local", "local", admin=True)
ANONYMOUS = Principal("anonymous", "anonymous")


@dataclass
class BrowserSession:
    """What a session cookie stands for."""

    principal: Principal
    expires_s: float


class BrowserSessions:
    """Session cookies -> principals; only a hash of each cookie is kept (memory only)."""

    def __init__(self, max_age_s: float = 7 * 24 * 3600,
                 clock: Callable[[], float] = time.time):
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, BrowserSession] = {}

    @staticmethod
    def _key(cookie: str) -> str:
        return hashlib.sha256(cookie.encode()).hexdigest()

    def create(self, principal: Principal) -> str:
        """A new cookie value for ``principal``."""
        cookie = secrets.token_urlsafe(32)
        with self._lock:
            now = self.clock()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_s > now}
            self._sessions[self._key(cookie)] = BrowserSession(principal, now + self.max_age_s)
        return cookie

    def get(self, cookie: str | None) -> Principal | None:
        if not cookie:
            return None
        with self._lock:
            session = self._sessions.get(self._key(cookie))
        if session is None or session.expires_s <= self.clock():
            return None
        return session.principal

    def update(self, cookie: str, principal: Principal) -> None:
        with self._lock:
            session = self._sessions.get(self._key(cookie))
            if session is not None:
                session.principal = principal

    def drop(self, cookie: str | None) -> None:
        if cookie:
            with self._lock:
                self._sessions.pop(self._key(cookie), None)


@dataclass
class Access:
    """The server's access rules: operator token, accounts, sessions, project lookup.

    Parameters
    ----------
    accounts
        Users, roles and share links.
    token
        The operator's token (``--token``); None: no operator token.
    open
        Everyone is the operator (no token, bound to loopback, no login configured).
    projects_of_layer
        The projects a served layer belongs to (for the precomputed routes).
    project_ids
        Every served project's id (for routes of no project).
    """

    accounts: Accounts
    token: str | None = None
    open: bool = False
    projects_of_layer: Callable[[str], list[str]] = lambda layer_id: []
    project_ids: Callable[[], list[str]] = list
    sessions: BrowserSessions = field(default_factory=BrowserSessions)
    limits: Limits = field(default_factory=Limits)
    #: OpenID Connect sign-in (:class:`ilastik_web.server.oidc.OidcLogin`), if configured.
    login: Any = None

    def limited(self, principal: Principal) -> bool:
        """Whether per-person limits apply (not to the operator)."""
        return not principal.admin

    # -- authentication ---------------------------------------------------------------

    def _is_operator_token(self, candidate: str) -> bool:
        return self.token is not None and hmac.compare_digest(candidate.encode(),
                                                               self.token.encode())

    def principal_for_token(self, token: str, current: Principal | None = None,
                            *, browser: bool = False) -> Principal | None:
        """The principal a presented token makes of ``current`` (None: not a valid token).

        ``browser``: the operator token opens a session of its own (its own viewer
        session and undo history), not the shared local user's.
        """
        if self._is_operator_token(token):
            if browser:
                return Principal(f"operator:{secrets.token_hex(4)}", "operator", admin=True)
            return LOCAL_USER
        link = self.accounts.resolve_token(token)
        if link is None:
            return None
        if current is None:
            guest = secrets.token_hex(4)
            current = Principal(f"guest:{guest}", f"guest {guest}")
        return replace(current, links=current.links | {link.id})

    def authenticate(self, request: web.Request) -> Principal | None:
        """The caller, or None when the request carries no valid credentials."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            principal = self.principal_for_token(value.strip())
            if principal is not None and not principal.admin:
                link_id = next(iter(principal.links))
                principal = Principal(f"link:{link_id}", f"link {link_id}", links=principal.links)
            return principal
        principal = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if principal is not None:
            return principal
        return LOCAL_USER if self.open else None

    # -- authorisation ----------------------------------------------------------------

    def role_on(self, principal: Principal, project_id: str) -> str | None:
        """The principal's role on ``project_id`` (None: none)."""
        if principal.admin:
            return "owner"
        roles = [self.accounts.role_of(principal.user_id, project_id)]
        roles += [self.accounts.link_role(link_id, project_id) for link_id in principal.links]
        return best_role(*roles)

    def projects_of(self, principal: Principal) -> dict[str, str]:
        """Project id -> role, for every served project the principal may see."""
        out = {}
        for project_id in self.project_ids():
            role = self.role_on(principal, project_id)
            if role is not None:
                out[project_id] = role
        return out

    def require(self, principal: Principal, role: str, project_id: str | None) -> None:
        """Raise unless ``principal`` has ``role`` (on ``project_id``, or on any project).

        Raises
        ------
        ForbiddenError
            The role is missing.
        """
        if role in ("public", "user"):
            return
        if role == "account":
            if not (principal.admin or principal.user_id):
                raise ForbiddenError(f"{principal.name} is not signed in, and this needs the "
                                     "account role (sign in)")
            return
        if role == "admin":
            if not principal.admin:
                raise ForbiddenError(f"{principal.name} is not this server's operator")
            return
        if principal.admin:
            return
        if project_id is not None:
            have = self.role_on(principal, project_id)
            where = f"project {project_id!r}"
        else:
            have = best_role(*self.projects_of(principal).values())
            where = "any project"
        if role_rank(have) < role_rank(role):
            raise ForbiddenError(
                f"{principal.name} has {'the ' + have if have else 'no'} role on {where}, "
                f"and this needs the {role} role")

    def scope_of(self, request: web.Request) -> str | list[str] | None:
        """The project(s) a request is about, from its path."""
        project_id = request.match_info.get("project_id")
        if project_id is not None:
            return project_id
        layer_id = request.match_info.get("layer_id")
        if layer_id is not None:
            return self.projects_of_layer(layer_id) or None
        return None

    def authorize(self, request: web.Request, principal: Principal, role: str) -> None:
        scope = self.scope_of(request)
        if isinstance(scope, list):
            errors = []
            for project_id in scope:
                try:
                    return self.require(principal, role, project_id)
                except ForbiddenError as exc:
                    errors.append(exc)
            raise errors[0]
        self.require(principal, role, scope)


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller of a request (set by :func:`auth_middleware`)."""
    return request.get(PRINCIPAL_KEY, ANONYMOUS)


def still_allowed(request: web.Request) -> bool:
    """Whether the caller may still use the route (links revoked, sessions ended: not)."""
    recheck = request.get(RECHECK_KEY)
    return True if recheck is None else recheck()


def set_session_cookie(response: web.StreamResponse, request: web.Request, cookie: str) -> None:
    response.set_cookie(SESSION_COOKIE, cookie, path="/", httponly=True, samesite="Strict",
                        secure=is_secure(request))


def _without_token(request: web.Request) -> str:
    query = {k: v for k, v in request.query.items() if k != TOKEN_QUERY}
    return base_url(request) + str(URL.build(path=request.path, query=query))


def auth_middleware(access: Access, table: RouteTable):
    """The middleware every request passes through.

    Public routes and CORS preflights skip authentication; everything else, unknown
    paths included, needs credentials and the route's role. A page URL with ``?token=``
    is answered with the session cookie and a redirect to the same URL without it.
    """

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        route = route_of(request, table)
        if request.method == "OPTIONS" or (route is not None and route.role == "public"):
            request[PRINCIPAL_KEY] = ANONYMOUS
            return await handler(request)
        if TOKEN_QUERY in request.query and request.method == "GET" and not access.open:
            return exchange_token(request)
        principal = access.authenticate(request)
        if principal is None and access.login is not None and request.method == "GET" \
                and "text/html" in request.headers.get("Accept", ""):
            # A page load: go and sign in, then come back here.
            next_path = str(URL.build(path=request.path, query=request.query))
            raise web.HTTPSeeOther(base_url(request) + "/auth/login?" +
                                   str(URL.build(query={"next": next_path}).query_string))
        if principal is None:
            raise UnauthenticatedError(
                "authentication required: open a share link, sign in, or send "
                "'Authorization: Bearer <token>'")
        access.authorize(request, principal, route.role if route is not None else "user")
        if request.method not in ("GET", "HEAD") and access.limited(principal):
            access.limits.charge(principal.id)
        request[PRINCIPAL_KEY] = principal
        role = route.role if route is not None else "user"

        def recheck() -> bool:
            try:
                access.authorize(request, principal, role)
            except ForbiddenError:
                return False
            return access.sessions.get(request.cookies.get(SESSION_COOKIE)) is not None \
                or principal.id.startswith("link:") or principal is LOCAL_USER

        request[RECHECK_KEY] = recheck
        return await handler(request)

    def exchange_token(request: web.Request) -> web.Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        current = access.sessions.get(cookie)
        if current is not None and current.admin:
            principal: Principal | None = current
        else:
            principal = access.principal_for_token(request.query[TOKEN_QUERY], current,
                                                   browser=True)
        if principal is None:
            raise UnauthenticatedError("this link is not valid (wrong, revoked or expired)")
        if current is not None and cookie is not None:
            access.sessions.update(cookie, principal)
        else:
            cookie = access.sessions.create(principal)
        response = web.Response(status=303, headers={"Location": _without_token(request),
                                                     "Cache-Control": "no-store",
                                                     "Referrer-Policy": "no-referrer"})
        set_session_cookie(response, request, cookie)
        return response

    return middleware


def build_access(config, hub) -> Access:
    """The access rules of one app from its settings and its projects.

    Parameters
    ----------
    config : ilastik_web.config.ServerConfig
        Token, host, accounts file.
    hub : ilastik_web.server.projects.ProjectHub
        The served projects.
    """
    from ilastik_web.server.web_safety import is_loopback_host

    issuer = getattr(config, "oidc_issuer", None)
    open_server = not config.token and is_loopback_host(config.host) and not issuer
    accounts = Accounts(config.accounts_path)
    login = None
    if issuer:
        from ilastik_web.server.oidc import OidcLogin, OidcSettings

        login = OidcLogin(OidcSettings(issuer, config.oidc_client_id or "",
                                       config.oidc_client_secret or "",
                                       admins=tuple(config.oidc_admins)), accounts)
    return Access(
        accounts=accounts,
        login=login,
        token=config.token,
        open=open_server,
        projects_of_layer=hub.projects_of_layer,
        project_ids=hub.ids,
        limits=Limits(getattr(config, "user_limits", None) or UserLimits()),
    )
