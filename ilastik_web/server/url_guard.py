"""SSRF guard for data URLs that people hand the server (creating a project from a URL).

A URL is accepted only when it is plain http(s) without credentials, its host is on the
configured allow-list (when there is one), and none of the addresses the host resolves to
is loopback, link-local (cloud metadata services live there), unspecified or multicast,
unless local addresses are explicitly allowed.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from ilastik_web.errors import ForbiddenError, InvalidRequestError


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for test, what in ((address.is_loopback, "loopback"), (address.is_link_local, "link-local"),
                       (address.is_unspecified, "unspecified"),
                       (address.is_multicast, "multicast")):
        if test:
            return what
    return None


def check_data_url(url: str, *, allowed_hosts: Sequence[str] = (),
                   allow_local: bool = False) -> str:
    """Return ``url`` when the server may fetch from it.

    Parameters
    ----------
    url
        The URL given.
    allowed_hosts
        Host names or patterns (``*.example.org``) that may be used; empty: any host.
    allow_local
        Let loopback and link-local addresses through (a test set-up, a laptop).

    Raises
    ------
    InvalidRequestError
        Not an http(s) URL with a host, or credentials in it.
    ForbiddenError
        Host not allowed, unresolvable, or resolving to a refused address.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("a data URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise InvalidRequestError("a data URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidRequestError("the data URL's port is not a number") from None
    host = parts.hostname.lower()
    if allowed_hosts and not any(fnmatch.fnmatch(host, pattern.lower())
                                 for pattern in allowed_hosts):
        raise ForbiddenError(f"host {host!r} is not on this server's list of data hosts")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ForbiddenError(f"host {host!r} cannot be resolved") from None
    if not allow_local:
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            reason = _refused(address)
            if reason is not None:
                raise ForbiddenError(f"host {host!r} resolves to a {reason} address "
                                     f"({address}); this server does not fetch from those")
    return url
