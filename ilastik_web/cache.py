"""A thread-safe LRU cache of arrays under a bytes budget, computing each key once.

Identical requests that arrive while a value is being computed wait for that one
computation instead of starting their own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ilastik_web.cancel import Cancelled, cancel_requested


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # requests that joined a computation already in flight
    evictions: int = 0
    nbytes: int = 0
    entries: int = 0


class ArrayCache:
    """LRU cache of read-only numpy arrays, bounded by total ``nbytes``.

    Parameters
    ----------
    budget_bytes
        Upper bound on the bytes held. A single value larger than the budget is
        returned but not kept.
    """

    def __init__(self, budget_bytes: int):
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0")
        self.budget_bytes = int(budget_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._in_flight: dict[Hashable, Future[np.ndarray]] = {}
        self._nbytes = 0
        self._stats = CacheStats()

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached value, or None; counts as a use for LRU order."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                self._stats.hits += 1
            return value

    def get_or_compute(self, key: Hashable, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the value for ``key``, calling ``compute`` at most once across threads.

        An exception from ``compute`` reaches every caller waiting on that key and is
        not cached, except :class:`~ilastik_web.cancel.Cancelled`: the computation was
        abandoned by the caller that ran it, so a waiter computes it again itself.
        """
        while True:
            try:
                return self._get_or_compute_once(key, compute)
            except Cancelled:
                if cancel_requested():
                    raise
                # Another caller's abandoned computation: ours still wants the value.

    def _get_or_compute_once(self, key: Hashable,
                             compute: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                self._stats.hits += 1
                return value
            pending = self._in_flight.get(key)
            if pending is None:
                pending = Future()
                self._in_flight[key] = pending
                owner = True
                self._stats.misses += 1
            else:
                owner = False
                self._stats.shared += 1
        if not owner:
            return pending.result()
        try:
            value = np.asarray(compute())
            value.setflags(write=False)
        except BaseException as exc:
            with self._lock:
                del self._in_flight[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._in_flight[key]
            self._store(key, value)
        pending.set_result(value)
        return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        value = np.asarray(value)
        value.setflags(write=False)
        with self._lock:
            self._store(key, value)

    def _store(self, key: Hashable, value: np.ndarray) -> None:
        if value.nbytes > self.budget_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        self._entries[key] = value
        self._nbytes += value.nbytes
        while self._nbytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._nbytes -= evicted.nbytes
            self._stats.evictions += 1

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate``; return how many."""
        with self._lock:
            doomed = [k for k in self._entries if predicate(k)]
            for k in doomed:
                self._nbytes -= self._entries.pop(k).nbytes
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            s = CacheStats(**vars(self._stats))
            s.nbytes = self._nbytes
            s.entries = len(self._entries)
            return s
