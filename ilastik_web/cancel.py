"""Cooperative cancellation of work running in worker threads.

A caller that may give up (an HTTP client that disconnects) runs the work under
:func:`cancellable` with a token; long computations call :func:`check_cancelled` between
steps, which raises :class:`Cancelled` once the token is set. Code run without a token
is never cancelled, so scripts and batch jobs are unaffected.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

from ilastik_web.errors import NotReadyError

T = TypeVar("T")


class Cancelled(NotReadyError):
    """The work was abandoned by the caller that asked for it (retrying is fine: 503)."""


class CancelToken:
    """Set once to ask the work running under it to stop at its next check.

    Parameters
    ----------
    parent
        A token whose cancellation cancels this one too.
    stale
        A quick predicate; once true, the work is no longer wanted (its input was
        superseded) and counts as cancelled.
    """

    def __init__(self, parent: CancelToken | None = None,
                 stale: Callable[[], bool] | None = None) -> None:
        self._event = threading.Event()
        self._parent = parent
        self._stale = stale

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if (self._parent is not None and self._parent.cancelled) or (
                self._stale is not None and self._stale()):
            self._event.set()
            return True
        return False


_current: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar(
    "ilastik_web_cancel_token", default=None
)


def cancel_requested() -> bool:
    """Whether the caller of the work running in this thread has given up."""
    token = _current.get()
    return token is not None and token.cancelled


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if the work in progress was abandoned."""
    if cancel_requested():
        raise Cancelled()


def cancellable(token: CancelToken, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` wrapped to run with ``token`` as the current token (in whatever thread)."""

    def run() -> T:
        reset = _current.set(token)
        try:
            return fn()
        finally:
            _current.reset(reset)

    return run
