"""Accounts: users, who may do what on which project, and share links.

Roles per project, each including the ones before it:

- ``viewer``: browse, see labels and predictions;
- ``annotator``: also paint, undo their own strokes, use SAM;
- ``owner``: also classes, features, jobs, sharing, deletion.

A share link grants one role on one project to whoever holds its token. Tokens are
``iwl_<link id>_<secret>``; only a SHA-256 of the secret is stored, and a presented secret
is compared with it in constant time. Links can be revoked and may expire.

Everything is kept in one JSON file, replaced atomically on every change (None: memory
only). This is a Python API; the server's access layer is one of its users.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ilastik_web.errors import InvalidRequestError, NotFoundError

ROLES = ("viewer", "annotator", "owner")
_TOKEN_PREFIX = "iwl_"


def role_rank(role: str | None) -> int:
    """0 for no role, then 1..3 for viewer, annotator, owner."""
    if role is None:
        return 0
    try:
        return ROLES.index(role) + 1
    except ValueError:
        raise InvalidRequestError(f"unknown role {role!r}; roles are {', '.join(ROLES)}") from None


def best_role(*roles: str | None) -> str | None:
    """The highest of ``roles`` (None when all are None)."""
    return max(roles, key=role_rank, default=None) if any(roles) else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    """A person known to the server (created on their first login)."""

    id: str
    name: str
    #: ``issuer|subject`` of the identity provider that vouches for them.
    subject: str | None = None


@dataclass(frozen=True)
class ShareLink:
    """One role on one project for whoever holds the token."""

    id: str
    project_id: str
    role: str
    secret_sha256: str
    created_s: float
    expires_s: float | None = None
    revoked: bool = False
    created_by: str | None = None

    def active(self, now: float) -> bool:
        return not self.revoked and (self.expires_s is None or now < self.expires_s)

    def to_json(self, now: float) -> dict:
        """Everything but the secret's hash."""
        return {"id": self.id, "project_id": self.project_id, "role": self.role,
                "created_s": self.created_s, "expires_s": self.expires_s,
                "revoked": self.revoked, "active": self.active(now),
                "created_by": self.created_by}


class Accounts:
    """Users, per-project roles and share links, persisted in ``path``.

    Parameters
    ----------
    path
        The JSON file (created on first change); None keeps everything in memory.
    clock
        Seconds since the epoch (for expiry; tests pass their own).
    """

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path is not None else None
        self.clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, User] = {}
        self._roles: dict[str, dict[str, str]] = {}  # project -> user -> role
        self._links: dict[str, ShareLink] = {}
        if self.path is not None and self.path.exists():
            self._load()

    # -- users ------------------------------------------------------------------------

    def user_for_subject(self, subject: str, name: str) -> User:
        """The user an identity provider calls ``subject``; created on first sight."""
        with self._lock:
            for user in self._users.values():
                if user.subject == subject:
                    if user.name != name and name:
                        user = replace(user, name=name)
                        self._users[user.id] = user
                        self._save()
                    return user
            user = User(id=secrets.token_hex(6), name=name or subject, subject=subject)
            self._users[user.id] = user
            self._save()
            return user

    def get_user(self, user_id: str) -> User:
        with self._lock:
            user = self._users.get(user_id)
        if user is None:
            raise NotFoundError(f"no user {user_id!r}")
        return user

    # -- roles ------------------------------------------------------------------------

    def set_role(self, project_id: str, user_id: str, role: str | None) -> None:
        """Give ``user_id`` ``role`` on ``project_id`` (None removes them)."""
        role_rank(role)
        with self._lock:
            members = self._roles.setdefault(project_id, {})
            if role is None:
                members.pop(user_id, None)
            else:
                members[user_id] = role
            self._save()

    def role_of(self, user_id: str | None, project_id: str) -> str | None:
        if user_id is None:
            return None
        with self._lock:
            return self._roles.get(project_id, {}).get(user_id)

    def projects_of(self, user_id: str) -> dict[str, str]:
        """Project id -> role, for every project ``user_id`` has a role on."""
        with self._lock:
            return {p: m[user_id] for p, m in self._roles.items() if user_id in m}

    def members(self, project_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._roles.get(project_id, {}))

    # -- share links ------------------------------------------------------------------

    def create_link(self, project_id: str, role: str, *, expires_in_s: float | None = None,
                    created_by: str | None = None) -> tuple[ShareLink, str]:
        """A new link and its token (shown once: only its hash is kept)."""
        if role_rank(role) == 0:
            raise InvalidRequestError("a share link needs a role")
        if expires_in_s is not None and not expires_in_s > 0:
            raise InvalidRequestError("expires_in_s must be a positive number of seconds")
        secret = secrets.token_urlsafe(24)
        now = self.clock()
        link = ShareLink(
            id=secrets.token_hex(6), project_id=project_id, role=role,
            secret_sha256=_digest(secret), created_s=now,
            expires_s=None if expires_in_s is None else now + float(expires_in_s),
            created_by=created_by,
        )
        with self._lock:
            self._links[link.id] = link
            self._save()
        return link, f"{_TOKEN_PREFIX}{link.id}_{secret}"

    def links(self, project_id: str) -> list[ShareLink]:
        with self._lock:
            return [link for link in self._links.values() if link.project_id == project_id]

    def revoke(self, project_id: str, link_id: str) -> ShareLink:
        """Revoke a link; it stops working at once."""
        with self._lock:
            link = self._links.get(link_id)
            if link is None or link.project_id != project_id:
                raise NotFoundError(f"no share link {link_id!r} on project {project_id!r}")
            link = replace(link, revoked=True)
            self._links[link_id] = link
            self._save()
        return link

    def resolve_token(self, token: str) -> ShareLink | None:
        """The active link ``token`` belongs to, or None (unknown, wrong, revoked, expired)."""
        if not token.startswith(_TOKEN_PREFIX):
            return None
        link_id, sep, secret = token[len(_TOKEN_PREFIX):].partition("_")
        if not sep:
            return None
        with self._lock:
            link = self._links.get(link_id)
        if link is None or not hmac.compare_digest(_digest(secret), link.secret_sha256):
            return None
        return link if link.active(self.clock()) else None

    def link_role(self, link_id: str, project_id: str) -> str | None:
        """The role an active link ``link_id`` grants on ``project_id`` (None otherwise)."""
        with self._lock:
            link = self._links.get(link_id)
        if link is None or link.project_id != project_id or not link.active(self.clock()):
            return None
        return link.role

    def link_projects(self, link_ids: frozenset[str]) -> dict[str, str]:
        """Project id -> best role granted by the active links among ``link_ids``."""
        now = self.clock()
        with self._lock:
            links = [self._links[i] for i in link_ids if i in self._links]
        out: dict[str, str] = {}
        for link in links:
            if link.active(now):
                out[link.project_id] = best_role(out.get(link.project_id), link.role) or link.role
        return out

    # -- persistence ------------------------------------------------------------------

    def _save(self) -> None:
        if self.path is None:
            return
        document = {
            "users": [asdict(u) for u in self._users.values()],
            "roles": self._roles,
            "links": [asdict(link) for link in self._links.values()],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(document, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _load(self) -> None:
        assert self.path is not None
        document = json.loads(self.path.read_text())
        self._users = {u["id"]: User(**u) for u in document.get("users", [])}
        self._roles = {p: dict(m) for p, m in document.get("roles", {}).items()}
        self._links = {link["id"]: ShareLink(**link) for link in document.get("links", [])}
