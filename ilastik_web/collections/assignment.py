"""Who works on which item, so that two annotators do not take the same one by accident.

Claims are kept in one JSON file beside the annotations (``assignments.json``): item id ->
user and the time of the claim. A claim lapses after ``claim_seconds`` without renewal
(an annotator who walked away does not hold an item forever). Users are plain id strings
(the single local user by default; the accounts of a shared server once it has them).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ilastik_web.errors import ForbiddenError, InvalidRequestError

_USER_MAX = 128


def check_user(user: str) -> str:
    if not isinstance(user, str) or not user or len(user) > _USER_MAX or not user.isprintable():
        raise InvalidRequestError(f"a user id is 1-{_USER_MAX} printable characters")
    return user


class Assignments:
    """Claims of items by users, persisted in ``path``.

    Parameters
    ----------
    path
        The JSON file (created on the first claim).
    claim_seconds
        Lifetime of a claim that is not renewed.
    clock
        Seconds since the epoch (a parameter so that lapsing can be tested without waiting).
    """

    def __init__(self, path: Path, *, claim_seconds: float = 3600.0, clock=time.time):
        self.path = Path(path)
        self.claim_seconds = float(claim_seconds)
        self.clock = clock
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged file loses the claims, never the annotations
        return data if isinstance(data, dict) else {}

    def _write(self, claims: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(claims, sort_keys=True))
        os.replace(tmp, self.path)

    def current(self) -> dict[str, dict]:
        """Claims that have not lapsed: item id -> {"user", "since"}."""
        now = self.clock()
        with self._lock:
            return {item: claim for item, claim in self._read().items()
                    if now - float(claim.get("since", 0)) < self.claim_seconds}

    def holder(self, item_id: str) -> str | None:
        claim = self.current().get(item_id)
        return claim["user"] if claim else None

    def claim(self, item_id: str, user: str, *, exclusive: bool = False) -> bool:
        """Claim (or renew) ``item_id`` for ``user``.

        Returns False when another user holds it and ``exclusive``; without ``exclusive``
        that raises :class:`ForbiddenError` naming the holder.
        """
        check_user(user)
        now = self.clock()
        with self._lock:
            claims = self._read()
            held = claims.get(item_id)
            if held and held.get("user") != user \
                    and now - float(held.get("since", 0)) < self.claim_seconds:
                if exclusive:
                    return False
                raise ForbiddenError(f"item {item_id!r} is being annotated by {held['user']}")
            claims[item_id] = {"user": user, "since": now}
            self._write(claims)
            return True

    def release(self, item_id: str, user: str) -> None:
        """Give ``item_id`` back (only its holder can; others are ignored)."""
        with self._lock:
            claims = self._read()
            if claims.get(item_id, {}).get("user") == user:
                del claims[item_id]
                self._write(claims)
