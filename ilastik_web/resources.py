"""One owner of a process's memory and threads: named caches and prioritised executors.

A :class:`Resources` is made once (by the app factory, or by a script) and handed down to
whatever computes: the caches split one memory budget, and the executors split the cores.

Memory
    ``memory_bytes`` is divided among the named caches by :data:`CACHE_SHARES`. Everything
    else the process holds (interpreter, libraries, numba and tensorstore pools, scratch
    memory of running computations) is the fixed overhead, documented as
    :data:`FIXED_OVERHEAD_BYTES` plus :data:`SCRATCH_BYTES_PER_THREAD` per worker thread.

Threads
    One pool of ``threads`` worker threads runs four lanes, highest priority first (the
    issue's order of what a user waits for):

    - ``interactive``: label edits and their acknowledgements, small project requests;
    - ``chunks``: chunks of the current version at the finest level, as viewers ask;
    - ``training``: training of the newest labels (one task per training);
    - ``background``: coarse pyramid levels, prefetch, and chunks of a version that is
      about to be replaced (a prediction while a training of newer labels is pending).

    A free worker takes the highest lane's first task (within a lane: lower ``priority``
    first, then arrival order). Lanes are looked up when a worker picks a task, not when it
    was queued: a task submitted with a ``demote`` predicate that has become true counts as
    background work, so a pending training overtakes predictions of the generation it will
    replace; while a training runs, such work does not start, and what is already running
    goes on at background priority. The background lane never holds more than
    ``background_threads`` workers, so with two or more threads at least one is always
    free for the viewers; background work runs at a lower OS priority (``nice``) as well.
    Each worker lets numba use
    ``filter_threads`` threads. Besides the ``threads`` CPU workers, two reserved threads
    run only their own lane: one for interactive tasks (a label edit is a few milliseconds
    of CPU and an fsync, and must never queue behind a chunk computation), one for training
    (the newest labels' training starts at once, at the viewers' OS priority, instead of
    after the chunk computations that occupy the CPU workers end).
"""

from __future__ import annotations

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
LANES = ("interactive", "chunks", "training", "background")
_RANK = {lane: rank for rank, lane in enumerate(LANES)}

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

#: ``nice`` increment of background work (coarse levels, prefetch, chunks about to be
#: replaced) and of exports the server starts. Mild on purpose: on a machine shared with
#: other programs at nice 0, a large increment starves that work; against our own nice-0
#: workers, 3 still gives them about twice its share of a core.
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


def set_thread_nice(value: int, native_id: int | None = None) -> bool:
    """Set the nice value of one thread (Linux threads are tasks): the calling one, or
    the thread of ``native_id`` (:func:`threading.get_native_id`) in this process.

    Raising it always works; lowering it again needs privileges, so this may return
    False, leaving the thread where it was.
    """
    try:
        os.setpriority(os.PRIO_PROCESS,
                       threading.get_native_id() if native_id is None else native_id,
                       max(-20, min(19, value)))
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
    demote: Callable[[], bool] | None
    priority: int
    order: int

    def unwanted(self) -> bool:
        """Nobody waits for it anymore: its caller went away, or its input was superseded."""
        return (self.future.cancelled() or (self.token is not None and self.token.cancelled)
                or (self.stale is not None and self.stale()))

    def effective_lane(self) -> str:
        """Its lane now: background once its ``demote`` predicate holds."""
        if self.demote is not None and _RANK[self.lane] < _RANK["background"] and self.demote():
            return "background"
        return self.lane


class Lane(Executor):
    """One priority class of a :class:`WorkerPool`, usable wherever an Executor is."""

    def __init__(self, pool: WorkerPool, name: str):
        self.pool = pool
        self.name = name

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.pool.submit(self.name, lambda: fn(*args, **kwargs))

    def submit_task(self, fn: Callable[[], Any], *, token: CancelToken | None = None,
                    stale: Callable[[], bool] | None = None,
                    demote: Callable[[], bool] | None = None, priority: int = 0) -> Future:
        """Run ``fn`` under ``token``; dropped (Cancelled) if cancelled or stale first.

        Within the lane, lower ``priority`` runs first (e.g. finer pyramid levels); while
        ``demote()`` holds, the task waits as background work.
        """
        return self.pool.submit(self.name, fn, token=token, stale=stale, demote=demote,
                                priority=priority)

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
        Worker threads shared by all lanes.
    limits
        Most shared workers a lane may occupy at once (default: all).
    nice
        ``nice`` increment a worker takes while it runs a task of a lane.
    on_start
        Called in each worker thread when it starts (thread-local settings).
    reserved
        Extra workers per lane that run only that lane's tasks (as submitted), e.g.
        ``{"interactive": 1}`` so that a label edit never waits for a chunk computation
        to end (its work waits on the disk, not the CPU). Lane limits do not apply to them.
    """

    def __init__(self, threads: int, *, limits: dict[str, int] | None = None,
                 nice: dict[str, int] | None = None,
                 on_start: Callable[[], None] | None = None, name: str = "ilastik-web",
                 reserved: dict[str, int] | None = None):
        self.threads = max(1, int(threads))
        self.limits = {lane: self.threads for lane in LANES}
        self.limits.update(limits or {})
        self.reserved = {lane: int(n) for lane, n in (reserved or {}).items() if n > 0}
        for lane in self.reserved:
            self._check_lane(lane)
        self._nice = dict(nice or {})
        self._on_start = on_start
        self._cond = threading.Condition()
        self._queue: list[_Task] = []
        self._running = dict.fromkeys(LANES, 0)  # tasks on shared workers, by effective lane
        self._active = 0  # tasks running on any worker
        self._trainings = 0  # training tasks running on any worker
        # What each shared worker runs: native thread id -> (task, its lane, base nice).
        self._current: dict[int, tuple[_Task, str, int]] = {}
        self._order = itertools.count()
        self._closed = False
        self.dropped = 0
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for lane, count in self.reserved.items():
            self._workers.extend(
                threading.Thread(target=self._work, args=(lane,), name=f"{name}-{lane}-{i}",
                                 daemon=True)
                for i in range(count))
        for worker in self._workers:
            worker.start()

    @staticmethod
    def _check_lane(name: str) -> None:
        if name not in LANES:
            raise ValueError(f"unknown lane {name!r}; lanes are {LANES}")

    def lane(self, name: str) -> Lane:
        self._check_lane(name)
        return Lane(self, name)

    def submit(self, lane: str, fn: Callable[[], Any], *, token: CancelToken | None = None,
               stale: Callable[[], bool] | None = None,
               demote: Callable[[], bool] | None = None, priority: int = 0) -> Future:
        """Queue ``fn`` in ``lane``; within a lane lower ``priority`` first, then FIFO.

        ``stale()`` true (or ``token`` cancelled) drops the task; ``demote()`` true makes
        it wait as background work. Both are asked whenever a worker picks a task, from
        the worker, and must be quick and never block.
        """
        self._check_lane(lane)
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            self._queue.append(_Task(future, fn, lane, token, stale, demote, int(priority),
                                     next(self._order)))
            self._cond.notify_all()
        return future

    def wake(self) -> None:
        """Let idle workers look at the queue again: a ``demote`` predicate may have
        changed (a training of newer labels started or ended)."""
        with self._cond:
            self._cond.notify_all()

    def idle(self) -> bool:
        """No task queued or running."""
        with self._cond:
            return not self._queue and not self._active

    def queued(self) -> dict[str, int]:
        """Tasks waiting per lane, as submitted (those cancelled no longer count)."""
        with self._cond:
            counts = dict.fromkeys(LANES, 0)
            for task in self._queue:
                if not task.future.cancelled():
                    counts[task.lane] += 1
            return counts

    def _next(self, reserved_lane: str | None) -> tuple[_Task | None, str, list[_Task]]:
        """The task a worker takes now, its effective lane, and the tasks dropped."""
        dropped = [task for task in self._queue if task.unwanted()]
        if dropped:
            self._queue = [task for task in self._queue if task not in dropped]
        best: tuple | None = None
        for task in self._queue:
            if reserved_lane is not None:
                if task.lane != reserved_lane:
                    continue
                lane = task.lane
            else:
                lane = task.effective_lane()
                if self._running[lane] >= self.limits[lane]:
                    continue
                if lane != task.lane and self._trainings:
                    continue  # what a running training will replace waits for it
            key = (_RANK[lane], task.priority, task.order)
            if best is None or key < best[0]:
                best = (key, task, lane)
        if best is None:
            return None, "", dropped
        self._queue.remove(best[1])
        return best[1], best[2], dropped

    def _work(self, reserved_lane: str | None = None) -> None:
        if self._on_start is not None:
            self._on_start()
        base = thread_nice()
        while True:
            with self._cond:
                while True:
                    task, lane, dropped = self._next(reserved_lane)
                    if task is not None or self._closed or dropped:
                        break
                    self._cond.wait()
                if task is None and not dropped:
                    return
                outdated: list[tuple[int, int]] = []
                if task is not None:
                    self._active += 1
                    if reserved_lane is None:
                        self._running[lane] += 1
                        self._current[threading.get_native_id()] = (task, lane, base)
                    if task.lane == "training":
                        self._trainings += 1
                        outdated = self._outdated_running()
            for stale in dropped:  # answered outside the lock: callbacks run here
                self._drop(stale)
            for native_id, nice in outdated:
                set_thread_nice(nice, native_id)
            if task is None:
                continue
            try:
                self._run(task, lane, base)
            finally:
                with self._cond:
                    self._active -= 1
                    if reserved_lane is None:
                        self._running[lane] -= 1
                        self._current.pop(threading.get_native_id(), None)
                    if task.lane == "training":
                        self._trainings -= 1
                    self._cond.notify_all()

    def _outdated_running(self) -> list[tuple[int, int]]:
        """(thread, nice) of shared workers computing what a starting training will
        replace: they go on at background priority, so the training gets the cores."""
        background = self._nice.get("background", 0)
        return [(native_id, base + background)
                for native_id, (task, lane, base) in self._current.items()
                if lane != "background" and task.effective_lane() == "background"]

    def _drop(self, task: _Task) -> None:
        if task.future.set_running_or_notify_cancel():
            task.future.set_exception(Cancelled("dropped before it started: no longer wanted"))
        self.dropped += 1

    def _run(self, task: _Task, lane: str, base: int) -> None:
        if task.unwanted():  # it turned stale since it was picked
            self._drop(task)
            return
        if not task.future.set_running_or_notify_cancel():
            self.dropped += 1  # its caller cancelled the future just now
            return
        # Without privileges a thread's nice value only goes up: a worker that ran
        # background work then stays there (it still runs every lane's tasks).
        wanted = base + self._nice.get(lane, 0)
        if thread_nice() != wanted:
            set_thread_nice(wanted)
        token = task.token
        if task.stale is not None:
            token = CancelToken(parent=token, stale=task.stale)
        fn = task.fn if token is None else cancellable(token, task.fn)
        try:
            result = fn()
        except BaseException as exc:
            task.future.set_exception(exc)
        else:
            task.future.set_result(result)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            for task in self._queue:
                task.future.cancel()
            self._queue.clear()
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
    interactive, chunks, training, background
        The lanes (executors) of the one worker pool.
    forest_threads
        Threads of one forest training (oneDAL's, or ``n_jobs``).
    predict_threads
        Threads of one served chunk's forest prediction in a worker.
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
        # Training runs on the training lane's reserved worker at the viewers' priority;
        # its joblib threads inherit that, and chunks it will make outdated wait meanwhile.
        self.forest_threads = self.threads
        # Like the filters: chunks are predicted side by side, one per worker, so a
        # chunk's forest stays on its worker's thread instead of splitting over every
        # core and fighting the other workers' chunks.
        self.predict_threads = 1
        self.export_threads = max(1, self.threads // 2)
        self.pool = WorkerPool(
            self.threads,
            limits={"background": self.background_threads if self.threads > 1 else 1,
                    "training": 1},
            nice={"background": BACKGROUND_NICE if self.threads > 1 else 0},
            on_start=lambda: set_numba_threads(self.filter_threads),
            reserved={"interactive": 1, "training": 1},
        )
        self.interactive = self.pool.lane("interactive")
        self.chunks = self.pool.lane("chunks")
        self.training = self.pool.lane("training")
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

    def describe(self) -> dict:
        """Budgets, thread counts and cache use, for logs and health checks."""
        return {
            "memory_bytes": self.memory_bytes,
            "rss_limit_bytes": self.rss_limit_bytes,
            "threads": self.threads,
            "lanes": {"interactive": self.interactive.threads, "chunks": self.chunks.threads,
                      "training": self.training.threads,
                      "background": self.background.threads},
            "reserved_threads": dict(self.pool.reserved),
            "forest_threads": self.forest_threads,
            "predict_threads": self.predict_threads,
            "export_threads": self.export_threads,
            "queued": self.pool.queued(),
            "caches": {name: {"budget_bytes": c.budget_bytes, "nbytes": c.stats.nbytes}
                       for name, c in self.caches.items()},
        }

    def close(self) -> None:
        self.pool.shutdown()
        for cache in self.caches.values():
            cache.clear()
