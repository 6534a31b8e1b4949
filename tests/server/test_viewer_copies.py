"""Per-viewer copies of a viewer session: own camera, shared layers and actions, bounded."""

from __future__ import annotations

from ilastik_web.server.layers import LayerRegistry
from ilastik_web.server.viewer_sessions import ViewerSession, ViewerSessions


def test_copies_start_from_the_shared_state_and_then_diverge():
    sessions = ViewerSessions()
    shared = sessions.add(ViewerSession("main", {"position": [1, 2, 3], "layers": []}))
    shared.follow(LayerRegistry())
    a = sessions.for_viewer("main", "a")
    b = sessions.for_viewer("main", "b")
    assert a is sessions.for_viewer("main", "a") and a is not b
    assert a.shared.snapshot()[0]["position"] == [1, 2, 3]
    a.shared.update(lambda s: {**s, "position": [9, 9, 9]})
    assert b.shared.snapshot()[0]["position"] == [1, 2, 3]
    assert shared.shared.snapshot()[0]["position"] == [1, 2, 3]
    assert sessions.for_viewer("main", None) is shared


def test_actions_are_shared_with_the_copies():
    sessions = ViewerSessions()
    shared = sessions.add(ViewerSession("main"))
    seen = []
    shared.add_action("go", seen.append)
    copy = sessions.for_viewer("main", "a")
    assert copy.invoke_action("go", {"x": 1}) == 1
    assert seen == [{"x": 1}]


def test_idle_copies_beyond_the_bound_are_dropped():
    sessions = ViewerSessions(max_copies=2)
    sessions.add(ViewerSession("main")).follow(LayerRegistry())
    first = sessions.for_viewer("main", "a")
    sessions.for_viewer("main", "b")
    sessions.for_viewer("main", "c")
    assert len(sessions.viewers("main")) == 2
    assert first.closed
    assert sessions.for_viewer("main", "a") is not first
