"""Prometheus metrics at ``GET /metrics`` (text exposition format 0.0.4, no extra
dependency): request latency per route group, cache hit rates, queue depths, training
times and batch-job states.

Route groups are the routes' OpenAPI tags (``precomputed``, ``viewer``, ``projects``,
``jobs``, ``sam``, ``api``), so the label set stays small however many projects exist.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable

from aiohttp import web

from ilastik_web.server.context import ServerContext
from ilastik_web.server.routing import Route, RouteTable, route_of

#: Latency histogram buckets (seconds).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestMetrics:
    """Latency histograms by (group, method, status class); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], list] = {}

    def observe(self, group: str, method: str, status: int, seconds: float) -> None:
        key = (group, method, f"{status // 100}xx")
        with self._lock:
            series = self._series.setdefault(key, [[0] * len(BUCKETS), 0, 0.0])
            index = bisect.bisect_left(BUCKETS, seconds)
            if index < len(BUCKETS):
                series[0][index] += 1
            series[1] += 1
            series[2] += seconds

    def lines(self) -> Iterable[str]:
        name = "ilastik_web_request_duration_seconds"
        yield f"# HELP {name} Time to answer a request, by route group."
        yield f"# TYPE {name} histogram"
        with self._lock:
            items = sorted((k, (list(v[0]), v[1], v[2])) for k, v in self._series.items())
        for (group, method, status), (buckets, count, total) in items:
            labels = f'group="{group}",method="{method}",status="{status}"'
            running = 0
            for bound, n in zip(BUCKETS, buckets, strict=True):
                running += n
                yield f'{name}_bucket{{{labels},le="{bound}"}} {running}'
            yield f'{name}_bucket{{{labels},le="+Inf"}} {count}'
            yield f"{name}_count{{{labels}}} {count}"
            yield f"{name}_sum{{{labels}}} {total:.6f}"


def metrics_middleware(metrics: RequestMetrics, table: RouteTable):
    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_of(request, table)
            group = (route.tags[0] if route is not None and route.tags else "other")
            metrics.observe(group, request.method, status, time.perf_counter() - started)

    return middleware


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, help_text: str, kind: str, samples: list[tuple[str, float]]):
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        yield f"{name}{{{labels}}} {value}" if labels else f"{name} {value}"


def state_lines(ctx: ServerContext) -> Iterable[str]:
    """Cache, queue, training and job gauges read from the app's resources now."""
    caches = sorted(ctx.resources.caches.items())
    requests, ratios, held, evictions = [], [], [], []
    for name, cache in caches:
        stats, label = cache.stats, f'cache="{name}"'
        requests += [(f'{label},outcome="hit"', stats.hits),
                     (f'{label},outcome="miss"', stats.misses),
                     (f'{label},outcome="shared"', stats.shared)]
        lookups = stats.hits + stats.misses + stats.shared
        ratios.append((label, round((stats.hits + stats.shared) / lookups, 6) if lookups else 0))
        held.append((label, stats.nbytes))
        evictions.append((label, stats.evictions))
    yield from _gauge("ilastik_web_cache_requests_total", "Lookups of each named cache by "
                      "outcome.", "counter", requests)
    yield from _gauge("ilastik_web_cache_hit_ratio", "Hits (and joined computations) per "
                      "lookup since start, per cache.", "gauge", ratios)
    yield from _gauge("ilastik_web_cache_bytes", "Bytes held by each cache.", "gauge", held)
    yield from _gauge("ilastik_web_cache_evictions_total", "Evictions of each cache.",
                      "counter", evictions)
    yield from _gauge("ilastik_web_worker_queue_depth", "Work waiting for a worker thread, "
                      "per lane.", "gauge",
                      [(f'lane="{lane}"', n) for lane, n in ctx.resources.pool.queued().items()])
    training, jobs = [], {}
    for served in ctx.projects.list():
        project = served.project
        label = f'project="{_escape(served.project_id)}"'
        status = project.training_status
        if status.last_seconds is not None:
            training.append((label, round(status.last_seconds, 6)))
        if project.directory is not None and (project.directory / "jobs").is_dir():
            from hpc.job import JobStore

            for job in JobStore(project.directory / "jobs").list():
                try:
                    state = job.state
                except Exception:  # a half-written or corrupt job: not a metric
                    continue
                jobs[(served.project_id, state)] = jobs.get((served.project_id, state), 0) + 1
    yield from _gauge("ilastik_web_training_seconds", "Duration of the last classifier "
                      "training, per project.", "gauge", training)
    yield from _gauge("ilastik_web_jobs", "Batch jobs by state (as last recorded).", "gauge",
                      [(f'project="{_escape(p)}",state="{s}"', n)
                       for (p, s), n in sorted(jobs.items())])


def metrics_routes(ctx: ServerContext, metrics: RequestMetrics) -> list[Route]:
    async def serve_metrics(request: web.Request) -> web.Response:
        lines = [*metrics.lines(), *await _in_thread(lambda: list(state_lines(ctx)))]
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    return [Route("GET", "/metrics", serve_metrics, name="metrics", tags=("api",), role="admin",
                  summary="Prometheus metrics: request latency per route group, cache hit "
                          "rates, queue depths, training times, job states",
                  content_type="text/plain")]


async def _in_thread(fn):
    import asyncio

    return await asyncio.to_thread(fn)
