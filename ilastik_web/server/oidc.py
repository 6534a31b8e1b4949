"""OpenID Connect login (authorisation-code flow with PKCE), as a client of the institute's
identity provider.

Configured by the provider's issuer URL and this server's client id and secret. The
provider's metadata comes from ``<issuer>/.well-known/openid-configuration``; authlib
builds the authorisation URL and exchanges the code, joserfc checks the ID token's
signature (the provider's JWKS) and its ``iss``, ``aud``, ``exp`` and ``nonce``.

The round trip is bound to the browser that started it: a short-lived login cookie
(SameSite=Lax, since the provider sends the browser back with a cross-site navigation)
whose hash must match the pending state. After the callback, the browser holds the usual
session cookie and the person is a :class:`~ilastik_web.server.auth.Principal` with a
user account (created on first login).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ilastik_web.accounts import Accounts
from ilastik_web.errors import (
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    UnauthenticatedError,
)
from ilastik_web.server.auth import Principal

log = logging.getLogger(__name__)

#: Cookie binding a login round trip to the browser that started it.
LOGIN_COOKIE = "ilastik_web_login"
#: Seconds a started login stays valid.
LOGIN_TIMEOUT_S = 600


@dataclass(frozen=True)
class OidcSettings:
    """How to reach the identity provider.

    Attributes
    ----------
    issuer
        The provider's issuer URL (its metadata lives under it).
    client_id, client_secret
        This server's registration at the provider.
    scope
        Scopes asked for.
    admins
        Users (``email``, ``preferred_username`` or ``sub``) who become the server's
        operators when they sign in.
    """

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str = "openid profile email"
    admins: tuple[str, ...] = ()


@dataclass
class _Pending:
    browser_sha256: str
    nonce: str
    verifier: str
    next_path: str
    redirect_uri: str
    expires_s: float


def safe_next(path: str | None) -> str:
    """A local path to return to after login (anything else becomes ``/``)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


class OidcLogin:
    """The client side of one provider.

    Parameters
    ----------
    settings
        Provider and client registration.
    accounts
        Where signed-in people get their user accounts.
    timeout_s
        For each request to the provider.
    """

    def __init__(self, settings: OidcSettings, accounts: Accounts, *, timeout_s: float = 30.0):
        self.settings = settings
        self.accounts = accounts
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    async def metadata(self) -> dict[str, Any]:
        """The provider's OpenID configuration (fetched once)."""
        if self._metadata is None:
            url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            response = await self._get(url)
            if response.status_code != 200:
                raise UnauthenticatedError(
                    f"the identity provider answered {response.status_code} for its metadata")
            metadata = response.json()
            if metadata.get("issuer") != self.settings.issuer:
                raise UnauthenticatedError("the identity provider names another issuer")
            self._metadata = metadata
        return self._metadata

    async def _get(self, url: str):
        try:
            async with self._client("") as client:
                return await client.request("GET", url, withhold_token=True)
        except Exception as exc:  # the transport's errors: unreachable, timeout, TLS
            raise NotReadyError(f"the identity provider cannot be reached: {exc}") from None

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            metadata = await self.metadata()
            response = await self._get(metadata["jwks_uri"])
            self._keys = KeySet.import_key_set(response.json())
        return self._keys

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.client_id, client_secret=self.settings.client_secret,
            scope=self.settings.scope, redirect_uri=redirect_uri,
            code_challenge_method="S256", timeout=self.timeout_s,
        )

    async def start(self, redirect_uri: str, next_path: str | None) -> tuple[str, str]:
        """Begin a login: the provider URL to send the browser to, and the login cookie."""
        metadata = await self.metadata()
        browser = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(16)
        async with self._client(redirect_uri) as client:
            url, state = client.create_authorization_url(
                metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
        now = time.time()
        with self._lock:
            self._pending = {k: p for k, p in self._pending.items() if p.expires_s > now}
            self._pending[state] = _Pending(
                hashlib.sha256(browser.encode()).hexdigest(), nonce, verifier,
                safe_next(next_path), redirect_uri, now + LOGIN_TIMEOUT_S)
        return url, browser

    async def finish(self, query: dict[str, str], browser: str | None,
                     current: Principal | None) -> tuple[Principal, str]:
        """Complete a login from the provider's callback: the principal and where to go.

        Raises
        ------
        UnauthenticatedError
            Unknown or expired state, another browser, a refused login, a bad ID token.
        """
        if "error" in query:
            raise UnauthenticatedError(
                f"the identity provider refused the login: {query['error']}")
        state, code = query.get("state"), query.get("code")
        if not state or not code:
            raise InvalidRequestError("the callback needs 'state' and 'code'")
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None or pending.expires_s <= time.time() or browser is None or not (
                hmac.compare_digest(hashlib.sha256(browser.encode()).hexdigest(),
                                    pending.browser_sha256)):
            raise UnauthenticatedError("this login was not started here or has expired; "
                                       "sign in again")
        metadata = await self.metadata()
        async with self._client(pending.redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    metadata["token_endpoint"], grant_type="authorization_code", code=code,
                    code_verifier=pending.verifier)
            except Exception as exc:  # authlib raises its own errors and httpx's
                raise UnauthenticatedError(f"the code exchange failed: {exc}") from None
            claims = await self._verify(token.get("id_token"), pending.nonce)
            if metadata.get("userinfo_endpoint") and not claims.get("name"):
                # Many providers put the profile in the user info, not in the ID token.
                response = await client.get(metadata["userinfo_endpoint"])
                info = response.json() if response.status_code == 200 else {}
                if info.get("sub") == claims["sub"]:
                    claims = {**info, **claims}
        name = (claims.get("name") or claims.get("preferred_username") or claims.get("email")
                or claims["sub"])
        user = self.accounts.user_for_subject(f"{claims['iss']}|{claims['sub']}", name)
        admin = any(claims.get(k) in self.settings.admins
                    for k in ("email", "preferred_username", "sub") if claims.get(k))
        links = current.links if current is not None else frozenset()
        principal = Principal(f"user:{user.id}", user.name, admin=admin, user_id=user.id,
                              links=links)
        log.info("signed in: user %s (%s)", user.id, user.name)
        return principal, pending.next_path

    async def _verify(self, id_token: str | None, nonce: str) -> dict[str, Any]:
        if not id_token:
            raise UnauthenticatedError("the identity provider sent no ID token")
        try:
            try:
                decoded = jwt.decode(id_token, await self._key_set())
            except JoseError:  # the provider may have rotated its keys
                decoded = jwt.decode(id_token, await self._key_set(refresh=True))
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.settings.issuer},
                aud={"essential": True, "value": self.settings.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise UnauthenticatedError(f"the ID token is not valid: {exc}") from None
        return dict(decoded.claims)


def refresh_page(target: str) -> str:
    """A page that moves on to ``target`` as a same-site navigation (so the SameSite=Strict
    session cookie set with it is sent)."""
    quoted = html.escape(target, quote=True)
    script = json.dumps(target).replace("<", "\\u003c")
    return (f'<!doctype html><meta http-equiv="refresh" content="0; url={quoted}">'
            f"<p>Signed in. <a href=\"{quoted}\">Continue</a></p>"
            f"<script>location.replace({script})</script>")


def require_login(login: OidcLogin | None) -> OidcLogin:
    if login is None:
        raise NotFoundError("login is not configured on this server (no --oidc-issuer)")
    return login
