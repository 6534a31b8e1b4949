"""One owner of a process's memory and threads: named caches and prioritised executors.

A :class:`Resources` is made once (by the app factory, or by a script) and handed down to
whatever computes: the caches split one memory budget, and the executors split the cores.

Memory
    ``memory_bytes`` is divided among the named caches by :data:`CACHE_SHARES`. Everything
    else the process holds (interpreter, libraries, numba and tensorstore pools, scratch
    memory of running computations) is the fixed overhead, documented as
    :data:`FIXED_OVERHEAD_BYTES` plus :data:`SCRATCH_BYTES_PER_THREAD` per worker thread.

Threads
    One pool of ``threads`` worker threads runs three lanes, highest priority first:

    - ``interactive``: label edits and their acknowledgements, small project requests;
    - ``chunks``: chunks the viewers ask for (raw, labels, predictions);
    - ``background``: training, prefetch, coarse work.

    A free worker always takes the highest lane's first task (within a lane: finer pyramid
    levels first, then arrival order). The background lane never holds more than
    ``background_threads`` workers, so with two or more threads at least one is always
    free for the viewers; background work runs at a lower OS priority (``nice``) as well.
    Each worker lets numba use ``filter_threads`` threads, and the forest gets
    ``forest_threads`` (from the trainer's own niced thread). Besides the ``threads``
    CPU workers, one more thread runs only interactive tasks: a label edit is a few
    milliseconds of CPU and an fsync, and must never queue behind a chunk computation.

Stale work is dropped: a task submitted with a cancellation token that is cancelled (or a
``stale`` predicate that is true) before a worker reaches it is never started.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from ilastik_web.cache import ArrayCache, CacheStats
from ilastik_web.cancel import Cancelled, CancelToken, cancellable

log = logging.getLogger(__name__)

#: Lanes, highest priority first.
LANES = ("interactive", "chunks", "background")

#: How the memory budget is split among the named caches (fractions summing to 1).
CACHE_SHARES = {
    "sources": 0.25,  # source blocks and computed pyramid levels (raw, labels)
    "features": 0.40,  # feature blocks, shared by training and prediction
    "predictions": 0.15,  # uint8 probabilities of the current generation
    "chunks": 0.15,  # encoded chunk bodies, served again without recomputing
    "instances": 0.05,  # SAM instance volumes
}

#: Memory outside the caches: interpreter, numpy/sklearn/numba/torch code, tensorstore's
#: decoded-chunk pool (256 MiB), aiohttp buffers. Measured RSS stays under
#: ``memory_bytes + FIXED_OVERHEAD_BYTES + threads * SCRATCH_BYTES_PER_THREAD``.
FIXED_OVERHEAD_BYTES = 768 << 20
#: Scratch memory of one running computation (a feature tile's arena, a forest batch).
SCRATCH_BYTES_PER_THREAD = 256 << 20

#: ``nice`` increment of background work (training) and of exports the server starts.
#: Mild on purpose: on a machine shared with other programs at nice 0, a large increment
#: starves the training a stroke waits for; against our own nice-0 workers, 3 still
#: gives them about twice its share of a core.
BACKGROUND_NICE = 3
EXPORT_NICE = 1

DEFAULT_MEMORY_BYTES = 2 << 30


def default_threads() -> int:
    """The cores this process may use (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def thread_nice() -> int:
    """The OS priority (nice value) of the calling thread."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):  # pragma: no cover - other systems
        return 0


def set_thread_nice(value: int) -> bool:
    """Set the nice value of the calling thread only (Linux threads are tasks).

    Raising it always works; lowering it again needs privileges, so this may return
    False, leaving the thread where it was.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(-20, min(19, value)))
        return True
    except (AttributeError, OSError):
        return False


def set_numba_threads(threads: int) -> None:
    """Let numba kernels called from this thread use ``threads`` threads."""
    try:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    except (ImportError, ValueError):  # pragma: no cover - numba is a dependency
        pass


class NamespacedCache:
    """A view of an :class:`ArrayCache` whose keys live in their own namespace.

    Several projects share one feature or prediction cache (one budget) without their
    keys colliding, and ``discard`` only ever drops this namespace's entries.
    """

    def __init__(self, cache: ArrayCache, namespace: Hashable):
        self.cache = cache
        self.namespace = namespace

    @property
    def budget_bytes(self) -> int:
        return self.cache.budget_bytes

    def get(self, key: Hashable) -> np.ndarray | None:
        return self.cache.get((self.namespace, key))

    def get_or_compute(self, key: Hashable, compute: Callable[[], np.ndarray]) -> np.ndarray:
        return self.cache.get_or_compute((self.namespace, key), compute)

    def put(self, key: Hashable, value: np.ndarray) -> None:
        self.cache.put((self.namespace, key), value)

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        ns = self.namespace
        return self.cache.discard(
            lambda k: isinstance(k, tuple) and len(k) == 2 and k[0] == ns and predicate(k[1])
        )

    def clear(self) -> None:
        self.discard(lambda key: True)

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats


@dataclass
class _Task:
    future: Future
    fn: Callable[[], Any]
    lane: str
    token: CancelToken | None
    stale: Callable[[], bool] | None


class Lane(Executor):
    """One priority class of a :class:`WorkerPool`, usable wherever an Executor is."""

    def __init__(self, pool: WorkerPool, name: str):
        self.pool = pool
        self.name = name

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.pool.submit(self.name, lambda: fn(*args, **kwargs))

    def submit_task(self, fn: Callable[[], Any], *, token: CancelToken | None = None,
                    stale: Callable[[], bool] | None = None, priority: int = 0) -> Future:
        """Run ``fn`` under ``token``; skipped (Cancelled) if cancelled or stale first.

        Within the lane, lower ``priority`` runs first (e.g. finer pyramid levels).
        """
        return self.pool.submit(self.name, fn, token=token, stale=stale, priority=priority)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Lanes end with their pool (:meth:`Resources.close`)."""

    @property
    def threads(self) -> int:
        return self.pool.limits[self.name]


class WorkerPool:
    """``threads`` workers taking tasks from :data:`LANES` by priority.

    Parameters
    ----------
    threads
        Worker threads.
    limits
        Most workers a lane may occupy at once (default: all).
    nice
        ``nice`` increment a worker takes while it runs a task of a lane.
    on_start
        Called in each worker thread when it starts (thread-local settings).
    interactive_worker
        Add one worker that runs only interactive tasks, so that a label edit never
        waits for a chunk computation to end (its work waits on the disk, not the CPU).
    """

    def __init__(self, threads: int, *, limits: dict[str, int] | None = None,
                 nice: dict[str, int] | None = None,
                 on_start: Callable[[], None] | None = None, name: str = "ilastik-web",
                 interactive_worker: bool = False):
        self.threads = max(1, int(threads))
        self.limits = {lane: self.threads for lane in LANES}
        self.limits.update(limits or {})
        self._nice = dict(nice or {})
        self._on_start = on_start
        self._cond = threading.Condition()
        self._queues: dict[str, list[tuple[int, int, _Task]]] = {lane: [] for lane in LANES}
        self._running = dict.fromkeys(LANES, 0)
        self._order = itertools.count()
        self._closed = False
        self.dropped = 0
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(self.threads)
        ]
        if interactive_worker:
            self._workers.append(threading.Thread(
                target=self._work, args=(("interactive",),), name=f"{name}-interactive",
                daemon=True))
        for worker in self._workers:
            worker.start()

    def lane(self, name: str) -> Lane:
        if name not in LANES:
            raise ValueError(f"unknown lane {name!r}; lanes are {LANES}")
        return Lane(self, name)

    def submit(self, lane: str, fn: Callable[[], Any], *, token: CancelToken | None = None,
               stale: Callable[[], bool] | None = None, priority: int = 0) -> Future:
        """Queue ``fn`` in ``lane``; within a lane lower ``priority`` first, then FIFO."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            heapq.heappush(self._queues[lane], (int(priority), next(self._order),
                                                _Task(future, fn, lane, token, stale)))
            self._cond.notify_all()
        return future

    def idle(self) -> bool:
        """No task queued or running."""
        with self._cond:
            return not any(self._queues.values()) and not any(self._running.values())

    def queued(self) -> dict[str, int]:
        """Tasks waiting per lane (those whose future was cancelled no longer count)."""
        with self._cond:
            return {lane: sum(not entry[-1].future.cancelled() for entry in q)
                    for lane, q in self._queues.items()}

    def _next(self, lanes: tuple[str, ...] = LANES) -> _Task | None:
        for lane in lanes:
            if self._queues[lane] and self._running[lane] < self.limits[lane]:
                return heapq.heappop(self._queues[lane])[-1]
        return None

    def _work(self, lanes: tuple[str, ...] = LANES) -> None:
        if self._on_start is not None:
            self._on_start()
        base = thread_nice()
        while True:
            with self._cond:
                task = self._next(lanes)
                while task is None and not self._closed:
                    self._cond.wait()
                    task = self._next(lanes)
                if task is None:
                    return
                self._running[task.lane] += 1
            try:
                self._run(task, base)
            finally:
                with self._cond:
                    self._running[task.lane] -= 1
                    self._cond.notify_all()

    def _run(self, task: _Task, base: int) -> None:
        if not task.future.set_running_or_notify_cancel():
            self.dropped += 1  # its caller cancelled the future (a request that went away)
            return
        if (task.token is not None and task.token.cancelled) or (
                task.stale is not None and task.stale()):
            self.dropped += 1
            task.future.set_exception(Cancelled("dropped before it started: no longer wanted"))
            return
        # Without privileges a thread's nice value only goes up: a worker that ran
        # background work then stays there (it still runs every lane's tasks).
        wanted = base + self._nice.get(task.lane, 0)
        if thread_nice() != wanted:
            set_thread_nice(wanted)
        fn = task.fn if task.token is None else cancellable(task.token, task.fn)
        try:
            result = fn()
        except BaseException as exc:
            task.future.set_exception(exc)
        else:
            task.future.set_result(result)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            for queue in self._queues.values():
                for entry in queue:
                    entry[-1].future.cancel()
                queue.clear()
            self._cond.notify_all()


class Resources:
    """The memory budget and the threads of one process, split among named users.

    Parameters
    ----------
    memory_bytes
        Budget of all caches together (see :data:`CACHE_SHARES`).
    threads
        Worker threads in all (default: the cores this process may use).

    Attributes
    ----------
    interactive, chunks, background
        The lanes (executors) of the one worker pool.
    forest_threads
        ``n_jobs`` of forest training and prediction.
    filter_threads
        numba threads of one feature computation in a worker.
    export_threads
        Threads an export started by the server may use (its CPU share).
    """

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY_BYTES, threads: int | None = None):
        if memory_bytes < 0:
            raise ValueError("memory_bytes must be >= 0")
        self.memory_bytes = int(memory_bytes)
        self.threads = max(1, int(threads) if threads is not None else default_threads())
        self.caches = {name: ArrayCache(int(self.memory_bytes * share))
                       for name, share in CACHE_SHARES.items()}
        # Several chunks run side by side, one per worker: kernels stay single-threaded
        # there, so no worker waits on a parallel region's slowest thread.
        self.filter_threads = 1
        self.background_threads = max(1, self.threads // 2)
        # Training runs in one niced thread of its own; its joblib threads inherit that
        # priority, so it may use every core the viewers leave idle.
        self.forest_threads = self.threads
        self.export_threads = max(1, self.threads // 2)
        self.pool = WorkerPool(
            self.threads,
            limits={"background": self.background_threads if self.threads > 1 else 1},
            nice={"background": BACKGROUND_NICE if self.threads > 1 else 0},
            on_start=lambda: set_numba_threads(self.filter_threads),
            interactive_worker=True,
        )
        self.interactive = self.pool.lane("interactive")
        self.chunks = self.pool.lane("chunks")
        self.background = self.pool.lane("background")

    def cache(self, name: str) -> ArrayCache:
        """The named cache (one of :data:`CACHE_SHARES`)."""
        try:
            return self.caches[name]
        except KeyError:
            raise ValueError(f"unknown cache {name!r}; caches are {sorted(self.caches)}") from None

    @property
    def rss_limit_bytes(self) -> int:
        """What the process's resident memory stays under: budget plus fixed overhead."""
        return (self.memory_bytes + FIXED_OVERHEAD_BYTES
                + self.threads * SCRATCH_BYTES_PER_THREAD)

    def background_thread_setup(self) -> None:
        """For threads of our own that do background work (the live trainer)."""
        set_numba_threads(self.background_threads)
        if self.threads > 1:
            set_thread_nice(thread_nice() + BACKGROUND_NICE)

    def describe(self) -> dict:
        """Budgets, thread counts and cache use, for logs and health checks."""
        return {
            "memory_bytes": self.memory_bytes,
            "rss_limit_bytes": self.rss_limit_bytes,
            "threads": self.threads,
            "lanes": {"interactive": self.interactive.threads, "chunks": self.chunks.threads,
                      "background": self.background.threads},
            "interactive_io_threads": 1,
            "forest_threads": self.forest_threads,
            "export_threads": self.export_threads,
            "queued": self.pool.queued(),
            "caches": {name: {"budget_bytes": c.budget_bytes, "nbytes": c.stats.nbytes}
                       for name, c in self.caches.items()},
        }

    def close(self) -> None:
        self.pool.shutdown()
        for cache in self.caches.values():
            cache.clear()
