import threading
import time

import numpy as np
import pytest

from ilastik_web.cache import ArrayCache


def test_lru_evicts_oldest_within_budget():
    cache = ArrayCache(budget_bytes=3 * 800)
    for i in range(4):
        cache.put(i, np.zeros(100))  # 800 bytes each
    assert cache.get(0) is None
    assert cache.get(3) is not None
    assert cache.stats.nbytes <= cache.budget_bytes


def test_values_are_read_only():
    cache = ArrayCache(budget_bytes=1 << 20)
    value = cache.get_or_compute("k", lambda: np.ones(3))
    with pytest.raises(ValueError):
        value[0] = 2


def test_concurrent_requests_compute_once():
    cache = ArrayCache(budget_bytes=1 << 20)
    calls = []

    def compute():
        calls.append(1)
        # Finish only once every other request waits on this computation.
        deadline = time.monotonic() + 120
        while cache.stats.shared < 7 and time.monotonic() < deadline:
            time.sleep(0.001)
        return np.arange(5)

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(np.array_equal(r, np.arange(5)) for r in results)


def test_errors_reach_waiters_and_are_not_cached():
    cache = ArrayCache(budget_bytes=1 << 20)

    def boom():
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", boom)
    assert cache.get_or_compute("k", lambda: np.zeros(1)).shape == (1,)
