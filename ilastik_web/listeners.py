"""Subscribers to changes of one object, called outside the object's own locks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

L = TypeVar("L", bound=Callable[..., None])


class Listeners(Generic[L]):
    """A thread-safe list of callbacks.

    Parameters
    ----------
    name
        What the listeners listen to, for the log line of a listener that fails.
    """

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._listeners: list[L] = []

    def subscribe(self, listener: L) -> Callable[[], None]:
        """Add ``listener``; returns the function that removes it again."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def call(self, *args) -> None:
        """Call every listener with ``args``; one that fails is logged and skipped."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(*args)
            except Exception:
                log.exception("%s listener failed", self.name)
