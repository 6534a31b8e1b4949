"""Per-person limits, so one busy (or hostile) user cannot crowd out the others.

- request rate: a token bucket per person for state-changing requests;
- stroke size: an upper bound of the voxels one stroke may touch;
- SAM share: how many SAM prompts one person may have running at once.

The server's operator is not limited. Going over a limit answers 429 (strokes too large:
400) with a message saying which limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ilastik_web.errors import InvalidRequestError, TooManyRequestsError


@dataclass(frozen=True)
class UserLimits:
    """Limits per person.

    Attributes
    ----------
    rate_per_s, burst
        State-changing requests: ``burst`` at once, refilled at ``rate_per_s``.
    max_stroke_voxels
        Most voxels one stroke may touch (an upper bound from its points and radius).
    sam_prompts
        SAM prompts one person may have in progress at once.
    sam_tasks
        SAM background tasks (propagation, precomputing) one person may have queued or
        running at once.
    """

    rate_per_s: float = 20.0
    burst: int = 200
    max_stroke_voxels: int = 8_000_000
    sam_prompts: int = 2
    sam_tasks: int = 2


def stroke_voxels_bound(points: int, radius: float, plane: str) -> int:
    """Upper bound of the voxels a stroke of ``points`` touches: a brush footprint per
    point (a square, or a cube for ``plane == "3d"``)."""
    side = 2 * math.ceil(radius) + 1
    return points * side ** (3 if plane == "3d" else 2)


class Limits:
    """The limits' state, per person id."""

    def __init__(self, settings: UserLimits | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings or UserLimits()
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (tokens, time)
        self._sam: dict[str, int] = {}
        self._tasks: dict[str, list] = {}

    def charge(self, person_id: str) -> None:
        """Count one state-changing request.

        Raises
        ------
        TooManyRequestsError
            The person's bucket is empty.
        """
        s = self.settings
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(person_id, (float(s.burst), now))
            tokens = min(float(s.burst), tokens + (now - then) * s.rate_per_s)
            if tokens < 1:
                self._buckets[person_id] = (tokens, now)
                raise TooManyRequestsError(
                    f"too many changes from you (over {s.rate_per_s:g}/s); retry shortly")
            self._buckets[person_id] = (tokens - 1, now)
            if len(self._buckets) > 10_000:  # forget people idle long enough to be full
                full = [k for k, (t, when) in self._buckets.items()
                        if t + (now - when) * s.rate_per_s >= s.burst]
                for key in full:
                    del self._buckets[key]

    def check_stroke(self, points: int, radius: float, plane: str) -> None:
        """Raise InvalidRequestError when a stroke may touch more than the limit."""
        bound = stroke_voxels_bound(points, radius, plane)
        if bound > self.settings.max_stroke_voxels:
            raise InvalidRequestError(
                f"stroke too large: up to {bound} voxels, the limit per stroke is "
                f"{self.settings.max_stroke_voxels}; paint it in smaller strokes")

    @contextmanager
    def sam_slot(self, person_id: str) -> Iterator[None]:
        """Hold one of the person's SAM prompt slots (429 when all are taken)."""
        with self._lock:
            used = self._sam.get(person_id, 0)
            if used >= self.settings.sam_prompts:
                raise TooManyRequestsError(
                    f"you already have {used} SAM prompts running; wait for them")
            self._sam[person_id] = used + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._sam[person_id] - 1
                if left:
                    self._sam[person_id] = left
                else:
                    del self._sam[person_id]


    def admit_task(self, person_id: str) -> None:
        """Raise TooManyRequestsError when the person has their share of SAM tasks going."""
        with self._lock:
            going = [t for t in self._tasks.get(person_id, []) if not t.is_finished]
            self._tasks[person_id] = going
            if len(going) >= self.settings.sam_tasks:
                raise TooManyRequestsError(
                    f"you already have {len(going)} SAM tasks queued or running; wait for "
                    "them or cancel one")

    def task_started(self, person_id: str, task) -> None:
        """Count ``task`` (anything with an ``is_finished`` property) against the person."""
        with self._lock:
            self._tasks.setdefault(person_id, []).append(task)


@contextmanager
def no_limit() -> Iterator[None]:
    yield
