"""Viewer sessions: the state shared between the server and every open viewer tab.

Neuroglancer's client keeps two JSON states in sync with its server, each tagged with a
generation: ``"s"`` (the viewer state: layers, position, layout) and ``"c"`` (config:
actions, key bindings, UI flags). The server pushes a state whenever its generation
differs from what a client last saw; a client posts its changes together with the
generation they were based on. A change on a stale base (the server or another client
changed the state meanwhile, which is routine: every stroke publishes new layer
versions) is rebased onto the current state (``viewer_state.rebase_state``) and pushed
back, so normal use answers no 412; only a base too old to remember is refused (412),
and the client then takes the newer state from the push. Server code changes state
through :meth:`TrackedState.update`, from any thread, and every connected client follows live.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from ilastik_web.errors import InvalidRequestError, NotFoundError
from ilastik_web.server.layers import LayerRegistry, ServedLayer
from ilastik_web.server.viewer_state import apply_layer_event, rebase_state

log = logging.getLogger(__name__)

ActionCallback = Callable[[dict[str, Any]], None]

#: Recent states kept by generation, so a client's change on one of them can be rebased.
HISTORY = 64


class GenerationConflictError(Exception):
    """A client's change was based on a generation that is no longer current."""


def new_generation() -> str:
    return secrets.token_hex(8)


class TrackedState:
    """A JSON state with a generation, changed atomically; thread-safe.

    Parameters
    ----------
    state
        Initial JSON-able state.
    on_change
        Called (outside the lock) after every change.
    """

    def __init__(self, state: dict[str, Any], on_change: Callable[[], None]):
        self._lock = threading.Lock()
        self._state = copy.deepcopy(state)
        self._generation = new_generation()
        self._on_change = on_change
        self._history: dict[str, dict[str, Any]] = {self._generation: self._state}

    def _remember(self) -> None:
        """Record the current state under its generation (call with the lock held)."""
        self._history[self._generation] = self._state
        while len(self._history) > HISTORY:
            del self._history[next(iter(self._history))]

    def snapshot(self) -> tuple[dict[str, Any], str]:
        """A copy of the state and its generation."""
        with self._lock:
            return copy.deepcopy(self._state), self._generation

    @property
    def generation(self) -> str:
        with self._lock:
            return self._generation

    def set(
        self,
        state: dict[str, Any],
        *,
        generation: str | None = None,
        expected_generation: str | None = None,
    ) -> str:
        """Replace the state and return the new generation.

        Raises
        ------
        GenerationConflictError
            ``expected_generation`` is given and is not the current generation.
        """
        with self._lock:
            if expected_generation is not None and expected_generation != self._generation:
                raise GenerationConflictError(
                    f"state changed since generation {expected_generation!r}"
                )
            self._state = copy.deepcopy(state)
            self._generation = generation or new_generation()
            self._remember()
            result = self._generation
        self._on_change()
        return result

    def post(self, state: dict[str, Any], *, generation: str, base: str | None) -> str:
        """A client's change made on generation ``base``; return the new generation.

        On the current base the state is taken as it is, under ``generation``. On an
        older, remembered base the client's changes are rebased onto the current state,
        which gets a fresh server generation, so it is pushed to that client too.

        Raises
        ------
        GenerationConflictError
            ``base`` is neither current nor remembered.
        """
        with self._lock:
            if base is None or base == self._generation:
                self._state = copy.deepcopy(state)
                self._generation = generation
            elif base in self._history:
                self._state = rebase_state(self._history[base], copy.deepcopy(state),
                                           self._state)
                self._generation = new_generation()
            else:
                raise GenerationConflictError(f"state changed since generation {base!r}")
            self._remember()
            result = self._generation
        self._on_change()
        return result

    def update(self, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> str:
        """Apply ``change`` to a copy of the state atomically; return the new generation.

        ``change`` may edit its argument in place (returning None) or return a new state.
        """
        with self._lock:
            draft = copy.deepcopy(self._state)
            result = change(draft)
            self._state = draft if result is None else result
            self._generation = new_generation()
            self._remember()
            generation = self._generation
        self._on_change()
        return generation


class _Subscriber:
    """An SSE connection waiting for changes, woken from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop is closed: the connection is gone anyway
            pass


class ViewerSession:
    """One shared viewer: its states, its connected clients and its actions.

    Parameters
    ----------
    token
        The id in the viewer URL ``/v/<token>/``.
    state
        Initial viewer state (``"s"``).
    config
        Initial config state (``"c"``).
    """

    def __init__(
        self,
        token: str,
        state: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ):
        self.token = token
        self._lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()
        self._actions: dict[str, list[ActionCallback]] = {}
        self.closed = False
        self._registry: LayerRegistry | None = None
        self._listener: Callable[[str, ServedLayer], None] | None = None
        #: Whose copy this is (None: the shared session).
        self.viewer_id: str | None = None
        self.shared = TrackedState(state or {}, self._wake_all)
        self.config = TrackedState(config or {}, self._wake_all)

    @property
    def states(self) -> dict[str, TrackedState]:
        """The synchronised states by the client's key."""
        return {"c": self.config, "s": self.shared}

    def subscribe(self) -> _Subscriber:
        """Register the calling event loop's connection for change notifications."""
        subscriber = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    @property
    def num_clients(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _wake_all(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.wake()

    def close(self) -> None:
        """End every event stream (server shutdown)."""
        self.closed = True
        self._wake_all()

    def add_action(self, name: str, callback: ActionCallback) -> None:
        """Call ``callback(state)`` when a client triggers action ``name``.

        The action is announced to clients through the config state's ``actions``.
        """
        with self._lock:
            self._actions.setdefault(name, []).append(callback)
            names = sorted(self._actions)
        self.config.update(lambda c: {**c, "actions": names})

    def invoke_action(self, name: str, state: dict[str, Any]) -> int:
        """Run the callbacks of action ``name``; return how many ran."""
        with self._lock:
            callbacks = list(self._actions.get(name, ()))
        for callback in callbacks:
            callback(state)
        return len(callbacks)

    def follow(self, registry: LayerRegistry) -> None:
        """Keep this session's layers in step with ``registry`` (added, new versions, removed)."""

        def on_event(event: str, layer: ServedLayer) -> None:
            on_top = [other.layer_id for other in registry.list() if other.display.on_top]
            self.shared.update(lambda s: apply_layer_event(s, event, layer, on_top=on_top))

        self._registry = registry
        self._listener = on_event
        registry.add_listener(on_event)

    def detach(self) -> None:
        """Stop following the layers (a dropped per-viewer copy) and end its streams."""
        if self._registry is not None:
            self._registry.remove_listener(self._listener)
        self.close()

    def copy_for(self, viewer_id: str) -> ViewerSession:
        """A session of its own for one viewer: starts from this one's states, follows the
        same layers and shares its actions; camera and layout then go their own way."""
        copy_ = ViewerSession(self.token, self.shared.snapshot()[0], self.config.snapshot()[0])
        copy_.viewer_id = viewer_id
        copy_._actions = self._actions
        if self._registry is not None:
            copy_.follow(self._registry)
        return copy_


class ViewerSessions:
    """The viewer sessions of one app, by token, and each viewer's own copies of them.

    Parameters
    ----------
    max_copies
        Per-viewer copies kept; beyond that, the least recently used one with no open
        connection is dropped (its viewer starts again from the shared session).
    """

    def __init__(self, max_copies: int = 256) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, ViewerSession] = {}
        self._copies: dict[tuple[str, str], ViewerSession] = {}
        self.max_copies = max_copies

    def add(self, session: ViewerSession) -> ViewerSession:
        with self._lock:
            if session.token in self._sessions:
                raise InvalidRequestError(f"viewer session {session.token!r} exists already")
            self._sessions[session.token] = session
        return session

    def get(self, token: str) -> ViewerSession:
        with self._lock:
            session = self._sessions.get(token)
        if session is None:
            raise NotFoundError(f"no viewer session {token!r}")
        return session

    def for_viewer(self, token: str, viewer_id: str | None) -> ViewerSession:
        """The session ``token`` as viewer ``viewer_id`` sees it: their own copy (made on
        first use), so that each person's camera, layers and layout stay theirs.
        None (the single local user) gets the shared session itself."""
        template = self.get(token)
        if viewer_id is None:
            return template
        key = (token, viewer_id)
        with self._lock:
            session = self._copies.pop(key, None)
            if session is not None:
                self._copies[key] = session  # most recently used last
                return session
        session = template.copy_for(viewer_id)
        with self._lock:
            session = self._copies.setdefault(key, session)
            while len(self._copies) > self.max_copies:
                idle = next((k for k, v in self._copies.items() if v.num_clients == 0), None)
                if idle is None or idle == key:
                    break
                self._copies.pop(idle).detach()
        return session

    def viewers(self, token: str) -> list[ViewerSession]:
        """The per-viewer copies of ``token``."""
        with self._lock:
            return [v for (t, _), v in self._copies.items() if t == token]

    def list(self) -> list[ViewerSession]:
        with self._lock:
            return list(self._sessions.values()) + list(self._copies.values())

    def close_all(self) -> None:
        for session in self.list():
            session.close()
