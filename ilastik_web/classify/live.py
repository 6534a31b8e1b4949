"""Background retraining: debounced, superseded work stops early, one generation at a time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ilastik_web.classify.forest import TrainingCancelled

log = logging.getLogger(__name__)


@dataclass
class TrainingStatus:
    """What the trainer is doing, for clients to display."""

    state: str = "idle"  # idle | waiting | features | training | error
    generation: int = 0
    progress: float = 0.0
    message: str = ""
    last_seconds: float | None = None
    samples: int = 0
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return dict(vars(self))


class LiveTrainer:
    """Runs ``train(should_stop, report)`` in a thread after changes settle.

    Parameters
    ----------
    train
        Does one training; returns the new generation number, or None if there was
        nothing to train. It must poll ``should_stop()`` and may call
        ``report(state, progress, message)``.
    debounce_s
        Quiet time after the last change before training starts.
    on_status
        Called (from the trainer thread) with every status change.
    thread_setup
        Called first in the trainer thread (its priority and numba threads).
    """

    def __init__(
        self,
        train: Callable[[Callable[[], bool], Callable[[str, float, str], None]], int | None],
        *,
        debounce_s: float = 0.25,
        on_status: Callable[[TrainingStatus], None] | None = None,
        generation: int = 0,
        thread_setup: Callable[[], None] | None = None,
    ):
        self._train = train
        self._thread_setup = thread_setup
        self.debounce_s = debounce_s
        self._on_status = on_status
        self._lock = threading.Condition()
        self._requested_at: float | None = None
        self._request_count = 0
        self._served = 0  # the latest request whose labels a training has handled
        self._stopped = False
        self.status = TrainingStatus(generation=generation)
        self._thread = threading.Thread(target=self._run, name="live-trainer", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Note a change; a training starts once changes pause for ``debounce_s``."""
        with self._lock:
            self._requested_at = time.monotonic()
            self._request_count += 1
            self._lock.notify_all()
        self._set_status("waiting", 0.0, "")

    @property
    def request_count(self) -> int:
        """Changes noted so far; a training that read the labels after this many changes
        covers them (see :meth:`served`)."""
        return self._request_count

    @property
    def pending(self) -> bool:
        """A change is not yet handled by a training: the served predictions are about
        to be replaced."""
        return not self._stopped and self._served < self._request_count

    def served(self, ticket: int) -> None:
        """The changes up to ``ticket`` (a :attr:`request_count`) are trained on and
        published; called by the training itself as it publishes, so predictions of the
        new generation are never mistaken for outdated ones."""
        with self._lock:
            self._served = max(self._served, int(ticket))

    def wait_idle(self, timeout: float = 60.0) -> TrainingStatus:
        """Block until no training is pending or running (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._requested_at is not None or self.status.state in ("features", "training"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("training did not finish in time")
                self._lock.wait(remaining)
            return self.status

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._thread.join(timeout=10)

    def _set_status(self, state: str, progress: float, message: str, **extra) -> None:
        with self._lock:
            self.status = TrainingStatus(
                state=state,
                generation=extra.get("generation", self.status.generation),
                progress=progress,
                message=message,
                last_seconds=extra.get("last_seconds", self.status.last_seconds),
                samples=extra.get("samples", self.status.samples),
            )
            status = self.status
            self._lock.notify_all()
        if self._on_status is not None:
            try:
                self._on_status(status)
            except Exception:
                log.exception("training status listener failed")

    def _run(self) -> None:
        if self._thread_setup is not None:
            self._thread_setup()
        while True:
            with self._lock:
                while not self._stopped and self._requested_at is None:
                    self._lock.wait()
                if self._stopped:
                    return
                # Debounce: wait until no request arrived for debounce_s.
                while not self._stopped:
                    assert self._requested_at is not None
                    quiet = time.monotonic() - self._requested_at
                    if quiet >= self.debounce_s:
                        break
                    self._lock.wait(self.debounce_s - quiet)
                if self._stopped:
                    return
                self._requested_at = None
                ticket = self._request_count

            def should_stop(ticket: int = ticket) -> bool:
                return self._stopped or self._request_count != ticket

            def report(state: str, progress: float, message: str = "") -> None:
                self._set_status(state, progress, message)

            started = time.perf_counter()
            try:
                generation = self._train(should_stop, report)
            except TrainingCancelled:
                continue
            except Exception as exc:  # keep the thread alive; the status tells the user
                log.exception("training failed")
                self.served(ticket)
                self._set_status("error", 0.0, str(exc))
                continue
            if should_stop():
                continue  # superseded: a newer request is already pending
            self.served(ticket)
            if generation is None:
                self._set_status("idle", 0.0, "need labels of at least two classes")
            else:
                self._set_status("idle", 1.0, "", generation=generation,
                                 last_seconds=time.perf_counter() - started)
