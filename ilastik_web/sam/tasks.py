"""Background tasks with progress, and admission limits that answer "busy" instead of queueing
without end.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from ilastik_web.errors import NotFoundError, TooManyRequestsError

log = logging.getLogger(__name__)

TaskState = Literal["queued", "running", "done", "failed", "cancelled"]
_FINISHED = ("done", "failed", "cancelled")


class AdmissionLimit:
    """At most ``limit`` holders at once; one more is refused, never queued.

    Use as ``with limit.admit(): ...``.
    """

    def __init__(self, limit: int, what: str):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = int(limit)
        self.what = what
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def admit(self) -> _Admission:
        with self._lock:
            if self._active >= self.limit:
                raise TooManyRequestsError(
                    f"too many {self.what} in progress ({self.limit}); retry shortly"
                )
            self._active += 1
        return _Admission(self)

    def _release(self) -> None:
        with self._lock:
            self._active -= 1


class _Admission:
    def __init__(self, limit: AdmissionLimit):
        self._limit = limit
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limit._release()

    def __enter__(self) -> _Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Task:
    """A background job: state, progress 0..1, a message, and its result when done."""

    task_id: str
    kind: str
    params: dict[str, Any]
    state: TaskState = "queued"
    progress: float = 0.0
    message: str = ""
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def report(self, progress: float, message: str = "") -> None:
        self.progress = min(1.0, max(0.0, float(progress)))
        if message:
            self.message = message

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task finished; False on timeout."""
        return self._done.wait(timeout)

    @property
    def is_finished(self) -> bool:
        return self.state in _FINISHED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "kind": self.kind,
            "state": self.state,
            "progress": round(self.progress, 4),
            "message": self.message,
            "params": self.params,
            "result": self.result,
            "error": self.error,
        }


class TaskQueue:
    """Runs tasks on its own threads (never the chunk-serving pool), at most
    ``max_pending`` unfinished at once; finished tasks are kept for ``keep`` look-ups.
    """

    def __init__(self, workers: int = 1, max_pending: int = 16, keep: int = 256):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sam-task")
        self.max_pending = int(max_pending)
        self.keep = int(keep)
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, Task] = OrderedDict()

    def submit(self, kind: str, params: dict[str, Any],
               run: Callable[[Task], dict[str, Any]]) -> Task:
        """Queue ``run(task) -> result``; it reports progress through ``task.report``.

        Raises
        ------
        TooManyRequestsError
            ``max_pending`` tasks are already queued or running.
        """
        with self._lock:
            pending = sum(not t.is_finished for t in self._tasks.values())
            if pending >= self.max_pending:
                raise TooManyRequestsError(
                    f"{pending} SAM tasks are pending (limit {self.max_pending}); retry later"
                )
            task = Task(secrets.token_hex(8), kind, params)
            self._tasks[task.task_id] = task
            self._forget_old()
        self._executor.submit(self._run, task, run)
        return task

    def get(self, task_id: str) -> Task:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"no SAM task {task_id!r}")
        return task

    def cancel(self, task_id: str) -> Task:
        task = self.get(task_id)
        task._cancel.set()
        if task.state == "queued":
            self._finish(task, "cancelled", message="cancelled before it started")
        return task

    def list(self) -> list[Task]:
        with self._lock:
            return list(self._tasks.values())

    def close(self) -> None:
        for task in self.list():
            task._cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, task: Task, run: Callable[[Task], dict[str, Any]]) -> None:
        if task.is_finished:
            return
        task.state = "running"
        try:
            result = run(task)
        except Exception as exc:
            if task.should_stop():
                self._finish(task, "cancelled", message="cancelled")
            else:
                log.exception("SAM task %s (%s) failed", task.task_id, task.kind)
                self._finish(task, "failed", error=str(exc) or type(exc).__name__)
            return
        if task.should_stop():
            self._finish(task, "cancelled", message="cancelled")
        else:
            task.result = result
            task.progress = 1.0
            self._finish(task, "done")

    def _finish(self, task: Task, state: TaskState, *, message: str = "",
                error: str | None = None) -> None:
        task.state = state
        task.error = error
        if message:
            task.message = message
        task.finished = time.time()
        task._done.set()

    def _forget_old(self) -> None:
        finished = [k for k, t in self._tasks.items() if t.is_finished]
        for key in finished[: max(0, len(finished) - self.keep)]:
            del self._tasks[key]
