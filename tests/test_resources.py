"""The one owner of memory and threads: cache budgets, lanes by priority, stale work."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ilastik_web.argtypes import byte_size
from ilastik_web.cancel import Cancelled, CancelToken, check_cancelled
from ilastik_web.resources import CACHE_SHARES, NamespacedCache, Resources, WorkerPool

DEADLINE_S = 120


@pytest.fixture
def resources():
    r = Resources(100 << 20, threads=2)
    yield r
    r.close()


def test_caches_split_the_budget(resources):
    assert abs(sum(CACHE_SHARES.values()) - 1) < 1e-9
    budgets = {name: c.budget_bytes for name, c in resources.caches.items()}
    assert sum(budgets.values()) <= 100 << 20
    assert budgets["features"] > budgets["predictions"] > 0
    assert resources.rss_limit_bytes > resources.memory_bytes
    with pytest.raises(ValueError, match="unknown cache"):
        resources.cache("nope")


def test_threads_add_up(resources):
    assert resources.pool.threads == 2
    assert resources.background.threads == 1  # one worker always left for the viewers
    assert resources.forest_threads == 2  # niced: it takes what the viewers leave
    described = resources.describe()
    assert described["threads"] == 2 and set(described["caches"]) == set(CACHE_SHARES)


def test_higher_lanes_run_first():
    pool = WorkerPool(1)
    gate = threading.Event()
    order: list[str] = []
    try:
        blocker = pool.submit("background", gate.wait)
        futures = [pool.submit(lane, lambda lane=lane: order.append(lane))
                   for lane in ("background", "chunks", "interactive", "chunks")]
        gate.set()
        blocker.result(DEADLINE_S)
        for f in futures:
            f.result(DEADLINE_S)
        assert order == ["interactive", "chunks", "chunks", "background"]
    finally:
        pool.shutdown()


def test_background_never_takes_every_worker():
    pool = WorkerPool(2, limits={"background": 1})
    gate = threading.Event()
    started = threading.Event()
    try:
        first = pool.submit("background", lambda: (started.set(), gate.wait(DEADLINE_S)))
        second = pool.submit("background", lambda: "second")
        assert started.wait(DEADLINE_S)
        # The other worker is free for a chunk although background work is queued.
        assert pool.submit("chunks", lambda: "chunk").result(DEADLINE_S) == "chunk"
        assert not second.done()
        gate.set()
        assert second.result(DEADLINE_S) == "second" and first.result(DEADLINE_S)
    finally:
        pool.shutdown()


def test_cancelled_and_stale_work_is_dropped_not_run():
    pool = WorkerPool(1)
    gate = threading.Event()
    ran: list[str] = []
    try:
        blocker = pool.submit("chunks", gate.wait)
        token = CancelToken()
        cancelled = pool.submit("chunks", lambda: ran.append("cancelled"), token=token)
        stale = pool.submit("chunks", lambda: ran.append("stale"), stale=lambda: True)
        kept = pool.submit("chunks", lambda: ran.append("kept"))
        token.cancel()
        gate.set()
        blocker.result(DEADLINE_S)
        kept.result(DEADLINE_S)
        for future in (cancelled, stale):
            with pytest.raises(Cancelled):
                future.result(DEADLINE_S)
        assert ran == ["kept"] and pool.dropped == 2
    finally:
        pool.shutdown()


def test_lane_runs_under_the_token(resources):
    token = CancelToken()
    token_seen = resources.chunks.submit_task(lambda: check_cancelled() or "ok", token=token)
    assert token_seen.result(DEADLINE_S) == "ok"
    assert resources.interactive.submit(lambda a, b: a + b, 1, 2).result(DEADLINE_S) == 3


def test_background_workers_run_at_lower_os_priority(resources):
    from ilastik_web.resources import thread_nice

    base = resources.interactive.submit(thread_nice).result(DEADLINE_S)
    assert resources.background.submit(thread_nice).result(DEADLINE_S) > base


def test_namespaced_views_share_a_budget_without_colliding(resources):
    shared = resources.cache("predictions")
    a, b = NamespacedCache(shared, "a"), NamespacedCache(shared, "b")
    a.put("k", np.zeros(4))
    b.put("k", np.ones(4))
    assert a.get("k").sum() == 0 and b.get("k").sum() == 4
    assert a.discard(lambda key: True) == 1
    assert a.get("k") is None and b.get("k") is not None


@pytest.mark.parametrize("text, expected", [("2G", 2 << 30), ("512M", 512 << 20),
                                            ("1.5g", 3 << 29), ("64MiB", 64 << 20),
                                            ("1000", 1000)])
def test_byte_size(text, expected):
    assert byte_size(text) == expected


def test_finer_levels_first_within_a_lane():
    pool = WorkerPool(1)
    gate = threading.Event()
    order: list[int] = []
    try:
        blocker = pool.submit("chunks", gate.wait)
        futures = [pool.submit("chunks", lambda level=level: order.append(level),
                               priority=level) for level in (2, 0, 1, 0)]
        gate.set()
        blocker.result(DEADLINE_S)
        for f in futures:
            f.result(DEADLINE_S)
        assert order == [0, 0, 1, 2]
    finally:
        pool.shutdown()


def test_a_label_edit_never_waits_for_busy_chunk_workers(resources):
    gate = threading.Event()
    started = [threading.Event(), threading.Event()]
    try:
        busy = [resources.chunks.submit(lambda e=e: (e.set(), gate.wait(DEADLINE_S)))
                for e in started]
        assert all(e.wait(DEADLINE_S) for e in started)  # every CPU worker is busy
        assert resources.interactive.submit(lambda: "ack").result(DEADLINE_S) == "ack"
    finally:
        gate.set()
    for future in busy:
        future.result(DEADLINE_S)


def _run_in_order(pool: WorkerPool, submit) -> list:
    """Block the pool's one worker, queue what ``submit(order)`` queues, then let it run."""
    gate = threading.Event()
    order: list = []
    blocker = pool.submit("chunks", gate.wait)
    futures = submit(order)
    gate.set()
    blocker.result(DEADLINE_S)
    for future in futures:
        try:
            future.result(DEADLINE_S)
        except Cancelled:
            pass
    return order


def test_the_issues_order_of_priorities():
    """Strokes > current chunks > training of the newest labels > coarse and outdated."""
    pool = WorkerPool(1)
    try:
        def submit(order):
            def item(lane, name, **kw):
                return pool.submit(lane, lambda: order.append(name), **kw)
            return [
                item("background", "coarse s2", priority=2),
                item("chunks", "outdated prediction", demote=lambda: True),
                item("training", "training"),
                item("background", "coarse s1", priority=1),
                item("chunks", "current chunk"),
                item("interactive", "stroke"),
                item("chunks", "superseded chunk", stale=lambda: True),
            ]
        assert _run_in_order(pool, submit) == [
            "stroke", "current chunk", "training", "outdated prediction", "coarse s1",
            "coarse s2"]
        assert pool.dropped == 1
    finally:
        pool.shutdown()


def test_lanes_are_looked_up_when_a_worker_picks_a_task():
    """A chunk queued before a stroke waits behind the training that stroke started, and
    one whose version was superseded meanwhile is dropped, not computed."""
    pool = WorkerPool(1)
    training_pending = threading.Event()
    superseded = threading.Event()
    try:
        def submit(order):
            chunk = pool.submit("chunks", lambda: order.append("chunk"),
                                demote=training_pending.is_set)
            old = pool.submit("chunks", lambda: order.append("old version"),
                              stale=superseded.is_set)
            training_pending.set()
            superseded.set()
            return [chunk, old, pool.submit("training", lambda: order.append("training"))]
        assert _run_in_order(pool, submit) == ["training", "chunk"]
        assert pool.dropped == 1
    finally:
        pool.shutdown()


def test_running_work_stops_once_stale():
    pool = WorkerPool(1)
    started, resume, superseded = threading.Event(), threading.Event(), threading.Event()

    def work():
        started.set()
        resume.wait(DEADLINE_S)
        check_cancelled()
        return "finished"

    try:
        future = pool.submit("chunks", work, stale=superseded.is_set)
        assert started.wait(DEADLINE_S)
        superseded.set()
        resume.set()
        with pytest.raises(Cancelled):
            future.result(DEADLINE_S)
        # Work of a version still current runs to its end.
        resume.clear()
        again = pool.submit("chunks", work, stale=lambda: False)
        resume.set()
        assert again.result(DEADLINE_S) == "finished"
    finally:
        pool.shutdown()


def test_training_starts_while_every_cpu_worker_computes_chunks(resources):
    gate = threading.Event()
    started = [threading.Event(), threading.Event()]
    try:
        busy = [resources.chunks.submit(lambda e=e: (e.set(), gate.wait(DEADLINE_S)))
                for e in started]
        assert all(e.wait(DEADLINE_S) for e in started)
        ran_on = resources.training.submit(lambda: threading.current_thread().name)
        assert "training" in ran_on.result(DEADLINE_S)
    finally:
        gate.set()
    for future in busy:
        future.result(DEADLINE_S)


def test_live_training_runs_as_a_task_of_the_training_lane(resources, blobs, blob_source):
    from ilastik_web.labels import Stroke
    from ilastik_web.project import Project

    _, truth = blobs
    project = Project.create(None, blob_source, classes=["background", "blob"], live=True,
                             debounce_s=0.05, resources=resources)
    threads: list[str] = []
    project.subscribe(lambda kind, payload: threads.append(threading.current_thread().name)
                      if kind == "training" and payload["state"] == "training" else None)
    try:
        assert not project.training_pending
        for label in (1, 2):
            y, x = np.argwhere(truth[6] == label)[0]
            project.paint(Stroke(((6.5, y + 0.5, x + 0.5),), radius=1.5, label=label))
        assert project.training_pending  # until the training of these labels is done
        assert project.wait_for_training(timeout=DEADLINE_S).generation >= 1
        assert not project.training_pending
        # A worker of the pool ran it, not the live trainer's own (debouncing) thread.
        assert threads and all(name.startswith("ilastik-web-") for name in threads)
    finally:
        project.close()


def test_while_a_training_runs_what_it_will_replace_waits_and_yields_the_cores():
    pool = WorkerPool(3, nice={"background": 3})  # a chunk, the training, one free
    training_pending = threading.Event()
    in_training, end_training = threading.Event(), threading.Event()
    computing, end_chunk = threading.Event(), threading.Event()
    from ilastik_web.resources import thread_nice

    def chunk():
        computing.set()
        assert end_chunk.wait(DEADLINE_S)
        return thread_nice()

    try:
        base = pool.submit("chunks", thread_nice).result(DEADLINE_S)
        running = pool.submit("chunks", chunk, demote=training_pending.is_set)
        assert computing.wait(DEADLINE_S)
        training_pending.set()  # a stroke: the chunk's generation is about to be replaced
        training = pool.submit("training",
                               lambda: (in_training.set(), end_training.wait(DEADLINE_S)))
        assert in_training.wait(DEADLINE_S)
        waiting = pool.submit("chunks", lambda: "outdated", demote=training_pending.is_set)
        current = pool.submit("chunks", lambda: "raw")  # not replaced: runs meanwhile
        assert current.result(DEADLINE_S) == "raw"
        assert not waiting.done()
        end_chunk.set()
        # The running chunk went on at background priority once the training started.
        assert running.result(DEADLINE_S) == base + 3
        assert not waiting.done()
        end_training.set()
        training.result(DEADLINE_S)
        assert waiting.result(DEADLINE_S) == "outdated"
    finally:
        end_chunk.set()
        end_training.set()
        pool.shutdown()


def test_a_demoted_task_starts_once_woken_when_its_predicate_changes():
    """Idle workers look at the queue again on ``wake`` (a training ended), not only when
    a task is submitted or ends: work no longer outdated starts at once."""
    pool = WorkerPool(2, limits={"background": 1})
    gate = threading.Event()
    outdated = threading.Event()
    outdated.set()
    try:
        blocker = pool.submit("background", lambda: gate.wait(DEADLINE_S))
        chunk = pool.submit("chunks", lambda: "computed", demote=outdated.is_set)
        outdated.clear()
        pool.wake()
        assert chunk.result(DEADLINE_S) == "computed"
        assert not blocker.done()  # the background lane's one worker is still taken
    finally:
        gate.set()
        pool.shutdown()


def test_a_new_generation_is_current_as_soon_as_it_is_published(resources, blobs,
                                                                blob_source):
    """Its chunks must not wait as outdated work in the moment between the publication
    and the trainer's status going idle."""
    from ilastik_web.labels import Stroke
    from ilastik_web.project import Project

    _, truth = blobs
    project = Project.create(None, blob_source, classes=["background", "blob"], live=True,
                             debounce_s=0.05, resources=resources)
    seen: list[bool] = []
    project.subscribe(lambda kind, payload: seen.append(project.training_pending)
                      if kind == "generation" else None)
    try:
        for label in (1, 2):
            y, x = np.argwhere(truth[6] == label)[0]
            project.paint(Stroke(((6.5, y + 0.5, x + 0.5),), radius=1.5, label=label))
        assert project.wait_for_training(timeout=DEADLINE_S).generation >= 1
        assert seen and not any(seen)
        # A stroke after it makes the generation outdated again, until trained on.
        y, x = np.argwhere(truth[7] == 2)[0]
        project.paint(Stroke(((7.5, y + 0.5, x + 0.5),), radius=1.5, label=2))
        assert project.training_pending
        project.wait_for_training(timeout=DEADLINE_S)
        assert not project.training_pending
    finally:
        project.close()


def test_served_predictions_stay_on_their_worker_thread(resources, blobs, blob_source):
    from ilastik_web.labels import Stroke
    from ilastik_web.project import Project

    _, truth = blobs
    project = Project.create(None, blob_source, classes=["background", "blob"],
                             resources=resources)
    for label in (1, 2):
        y, x = np.argwhere(truth[6] == label)[0]
        project.paint(Stroke(((6.5, y + 0.5, x + 0.5),), radius=1.5, label=label))
    project.train()
    generation = project.current_generation()
    # Training used the resources' threads; each served box predicts on one thread.
    assert generation.classifier.forest.n_jobs == resources.forest_threads
    volume = generation.pyramids["probabilities"].levels[0]
    assert volume.threads == resources.predict_threads == 1
    features = generation.computer.features(0, volume.bounds)
    one = generation.classifier.predict_proba(features, threads=1)
    assert np.array_equal(one, generation.classifier.predict_proba(features, threads=2))
    project.close()
