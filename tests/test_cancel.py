import threading
import time

import numpy as np
import pytest

from ilastik_web.cache import ArrayCache
from ilastik_web.cancel import (
    Cancelled,
    CancelToken,
    cancel_requested,
    cancellable,
    check_cancelled,
)

DEADLINE_S = 120


def test_no_token_never_cancels():
    check_cancelled()


def test_cancelling_stops_work_at_its_next_check():
    token = CancelToken()
    steps = []

    def work():
        for i in range(1000):
            check_cancelled()
            steps.append(i)
            if i == 3:
                token.cancel()
        return "finished"

    with pytest.raises(Cancelled):
        cancellable(token, work)()
    assert steps == [0, 1, 2, 3]


def test_waiter_recomputes_when_the_owner_is_cancelled():
    cache = ArrayCache(1 << 20)
    owner_token = CancelToken()
    started = threading.Event()
    calls = []

    def slow():
        calls.append(threading.current_thread().name)
        started.set()
        if threading.current_thread().name == "owner":
            # Runs until its caller gives up (polled, with a generous deadline).
            deadline = time.monotonic() + DEADLINE_S
            while not cancel_requested() and time.monotonic() < deadline:
                time.sleep(0.005)
            check_cancelled()
        return np.arange(3)

    results = {}

    def owner():
        try:
            results["owner"] = cancellable(owner_token, lambda: cache.get_or_compute("k", slow))()
        except Cancelled:
            results["owner"] = "cancelled"

    def waiter():
        results["waiter"] = cache.get_or_compute("k", slow)

    a = threading.Thread(target=owner, name="owner")
    a.start()
    started.wait(5)
    b = threading.Thread(target=waiter, name="waiter")
    b.start()
    deadline = time.monotonic() + DEADLINE_S
    while cache.stats.shared < 1:  # the waiter joined the owner's computation
        assert time.monotonic() < deadline, "the waiter never joined"
        time.sleep(0.005)
    owner_token.cancel()
    a.join(DEADLINE_S)
    b.join(DEADLINE_S)
    assert results["owner"] == "cancelled"
    assert np.array_equal(results["waiter"], np.arange(3))
    assert calls == ["owner", "waiter"]
