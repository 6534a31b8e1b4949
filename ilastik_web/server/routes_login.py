"""Sign-in through OpenID Connect: ``/auth/login`` sends the browser to the identity
provider, ``/auth/callback`` takes it back and opens a session.

Without ``--oidc-issuer`` both answer 404; share links and ``--token`` work regardless.
"""

from __future__ import annotations

from aiohttp import web

from ilastik_web.server.auth import SESSION_COOKIE, Access, set_session_cookie
from ilastik_web.server.oidc import LOGIN_COOKIE, LOGIN_TIMEOUT_S, refresh_page, require_login
from ilastik_web.server.routing import Param, Route
from ilastik_web.server.urls import base_url, is_secure


def login_routes(access: Access) -> list[Route]:
    """The login routes over ``access.login`` (None: not configured)."""

    async def login(request: web.Request) -> web.Response:
        oidc = require_login(access.login)
        url, browser = await oidc.start(base_url(request) + "/auth/callback",
                                        request.query.get("next"))
        response = web.Response(status=302, headers={"Location": url,
                                                     "Cache-Control": "no-store"})
        # Lax: the provider brings the browser back with a cross-site navigation.
        response.set_cookie(LOGIN_COOKIE, browser, path="/auth/", httponly=True,
                            samesite="Lax", secure=is_secure(request), max_age=LOGIN_TIMEOUT_S)
        return response

    async def callback(request: web.Request) -> web.Response:
        oidc = require_login(access.login)
        old = request.cookies.get(SESSION_COOKIE)
        principal, next_path = await oidc.finish(
            dict(request.query), request.cookies.get(LOGIN_COOKIE), access.sessions.get(old))
        access.sessions.drop(old)  # a fresh session id after login
        cookie = access.sessions.create(principal)
        response = web.Response(text=refresh_page(base_url(request) + next_path),
                                content_type="text/html",
                                headers={"Cache-Control": "no-store",
                                         "Referrer-Policy": "no-referrer"})
        response.del_cookie(LOGIN_COOKIE, path="/auth/")
        set_session_cookie(response, request, cookie)
        return response

    tags = ("access",)
    return [
        Route("GET", "/auth/login", login, name="login", role="public", tags=tags,
              summary="Sign in with the identity provider (OpenID Connect)",
              parameters=(Param("next", "query", "Local path to return to", required=False),),
              responses={302: "To the identity provider", 404: "Login not configured"},
              content_type="text/html"),
        Route("GET", "/auth/callback", callback, name="login_callback", role="public",
              tags=tags, summary="Where the identity provider sends the browser back",
              parameters=(Param("code", "query", "Authorisation code", required=False),
                          Param("state", "query", "Login state", required=False)),
              responses={200: "Signed in; the page moves on", 401: "Login failed",
                         404: "Login not configured"},
              content_type="text/html"),
    ]
