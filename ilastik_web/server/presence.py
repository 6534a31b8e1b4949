"""Who is on a project now: people with an open event connection, and their roles."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ilastik_web.listeners import Listeners

Listener = Callable[[list[dict]], None]


@dataclass
class _Person:
    name: str
    role: str | None
    connections: int = 0


class Presence:
    """Counts each person's open connections; tells listeners whenever the list changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._people: dict[str, _Person] = {}
        self._listeners: Listeners[Listener] = Listeners("presence")

    def people(self) -> list[dict]:
        """``[{"id", "name", "role"}]`` of everyone connected, by name."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> list[dict]:
        return sorted(({"id": pid, "name": p.name, "role": p.role}
                       for pid, p in self._people.items()), key=lambda p: (p["name"], p["id"]))

    def join(self, person_id: str, name: str, role: str | None) -> None:
        with self._lock:
            person = self._people.setdefault(person_id, _Person(name, role))
            person.connections += 1
            person.role = role
            new = person.connections == 1
            people = self._snapshot()
        if new:
            self._tell(people)

    def leave(self, person_id: str) -> None:
        with self._lock:
            person = self._people.get(person_id)
            if person is None:
                return
            person.connections -= 1
            if person.connections > 0:
                return
            del self._people[person_id]
            people = self._snapshot()
        self._tell(people)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.subscribe(listener)

    def _tell(self, people: list[dict]) -> None:
        self._listeners.call(people)
