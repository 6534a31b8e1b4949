"""Batch-job routes: submit from a project (its classifier frozen), list, status with
progress, logs, cancel, resume, and open a finished export as a viewer layer.

Jobs live in ``<project folder>/jobs/`` (see :mod:`hpc.job`), so they survive a server
restart: listing or asking for a job refreshes its state from the folder (and from
``squeue`` for Slurm jobs).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hpc.job import FORMATS, EngineSpec
from hpc.plan import parse_roi
from hpc.service import JobService
from ilastik_web.cache import ArrayCache
from ilastik_web.classify.blockwise import OUTPUTS
from ilastik_web.errors import InvalidRequestError
from ilastik_web.server.projects import ProjectHub, ServedProject
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.sources.location import check_allowed

log = logging.getLogger(__name__)
T = TypeVar("T")

_SUFFIX = {"ome-zarr": ".ome.zarr", "ome-zarr-0.5": ".ome.zarr", "n5": ".n5",
           "precomputed": ".precomputed", "hdf5": ".h5", "tiff": ".tif"}
_ENGINE_FIELDS = ("kind", "workers", "threads", "address", "partition", "account", "time",
                  "mem", "cpus", "gpus", "blocks_per_task")
_PROJECT = Param("project_id", description="Project id")
_JOB = Param("job_id", description="Job id")


class JobServices:
    """One :class:`JobService` per open project (its ``jobs/`` folder)."""

    def __init__(self, hub: ProjectHub):
        self.hub = hub
        self._lock = threading.Lock()
        self._services: dict[str, JobService] = {}

    def of(self, served: ServedProject) -> JobService:
        directory = served.project.directory
        if directory is None:
            raise InvalidRequestError("this project lives in memory only; batch jobs need a "
                                      "project folder")
        with self._lock:
            service = self._services.get(served.project_id)
            if service is None:
                service = self._services[served.project_id] = JobService(directory / "jobs")
            return service


def _engine_of(body: dict[str, Any]) -> EngineSpec:
    engine = body.get("engine") or {"kind": "local"}
    if isinstance(engine, str):
        engine = {"kind": engine}
    if not isinstance(engine, dict) or set(engine) - set(_ENGINE_FIELDS):
        raise InvalidRequestError(f"engine must be an object with keys from {_ENGINE_FIELDS}")
    try:
        return EngineSpec(**engine)
    except TypeError as exc:
        raise InvalidRequestError(f"bad engine: {exc}") from None


def submit_request(served: ServedProject, service: JobService, body: Any,
                   allowed_roots: Sequence[Path] | None):
    """Validate a submit body and start the job (blocking; run it in the executor)."""
    if not isinstance(body, dict):
        raise InvalidRequestError('expected {"export": ..., "format"?: ..., "output"?: ...}')
    export = body.get("export")
    if export not in OUTPUTS:
        raise InvalidRequestError(f"export must be one of {', '.join(OUTPUTS)}")
    fmt = body.get("format", "ome-zarr")
    if fmt not in FORMATS:
        raise InvalidRequestError(f"format must be one of {', '.join(FORMATS)}")
    level = body.get("level", 0)
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        raise InvalidRequestError("level must be an integer >= 0")
    memory = body.get("memory_bytes", 1 << 30)
    if not isinstance(memory, int) or memory <= 0:
        raise InvalidRequestError("memory_bytes must be a positive integer")
    project = served.project
    output = body.get("output")
    if output is None:
        exports = project.directory / "exports"
        exports.mkdir(exist_ok=True)
        output = exports / f"g{project.generation}-{export}-{len(service.store.list())}" \
                           f"{_SUFFIX[fmt]}"
    elif not isinstance(output, str) or not output.strip():
        raise InvalidRequestError("output must be a path")
    output = Path(output)
    check_allowed(output.parent, allowed_roots, str(output))
    roi = body.get("roi")
    if roi is not None:
        if not isinstance(roi, str):
            raise InvalidRequestError('roi must look like "z0:z1,y0:y1,x0:x1"')
        if level >= len(project.source):
            raise InvalidRequestError(f"level {level} outside 0..{len(project.source) - 1}")
        roi = parse_roi(roi, project.source.levels[level].shape)
    return service.submit_from_project(project, output=output, format=fmt, export=export,
                                       level=level, roi=roi, engine=_engine_of(body),
                                       memory_bytes=memory, background=True)


def job_routes(hub: ProjectHub, executor: Executor, *, cache: ArrayCache | None = None,
           allowed_roots: Sequence[Path] | None = None) -> list[Route]:
    """Job routes over the projects in ``hub``; blocking work runs in ``executor``.

    Parameters
    ----------
    hub
        The open projects (and the layer registry exports are added to).
    executor
        Where blocking calls run.
    cache
        Cache for the pyramid levels an opened export may need.
    allowed_roots
        Folders outputs may be written to (None: anywhere).
    """
    services = JobServices(hub)

    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    def context(request: web.Request) -> tuple[ServedProject, JobService]:
        served = hub.get(request.match_info["project_id"])
        return served, services.of(served)

    async def list_jobs(request: web.Request) -> web.Response:
        _, service = context(request)
        return web.json_response({"jobs": await run(service.list)})

    async def submit_job(request: web.Request) -> web.Response:
        served, service = context(request)
        body = await read_json(request)
        job = await run(lambda: submit_request(served, service, body, allowed_roots))
        return web.json_response(await run(lambda: service.get(job.id)), status=201)

    async def get_job(request: web.Request) -> web.Response:
        _, service = context(request)
        job_id = request.match_info["job_id"]
        return web.json_response(await run(lambda: service.get(job_id)))

    async def job_logs(request: web.Request) -> web.Response:
        _, service = context(request)
        job_id = request.match_info["job_id"]
        return web.Response(text=await run(lambda: service.logs(job_id)),
                            content_type="text/plain")

    async def cancel_job(request: web.Request) -> web.Response:
        _, service = context(request)
        job_id = request.match_info["job_id"]
        return web.json_response(await run(lambda: service.cancel(job_id)))

    async def resume_job(request: web.Request) -> web.Response:
        _, service = context(request)
        job_id = request.match_info["job_id"]
        return web.json_response(await run(lambda: service.resume(job_id)))

    async def open_layer(request: web.Request) -> web.Response:
        served, service = context(request)
        job_id = request.match_info["job_id"]

        def register() -> dict:
            from ilastik_web.server.layers import StaticLayer

            summary = service.get(job_id)
            volume = service.output_source(job_id)
            kind = "segmentation" if summary["export"] == "segmentation" else "image"
            layer = StaticLayer(f"{served.project_id}-job-{job_id}", volume, kind=kind,
                                name=f"{summary['export']} (job {job_id})", cache=cache,
                                location=summary["output"])
            hub.registry.replace(layer)
            return {"layer_id": layer.layer_id, "job": summary}

        return web.json_response(await run(register), status=201)

    p = (_PROJECT,)
    pj = (_PROJECT, _JOB)
    tags = ("jobs",)
    return [
        Route("GET", "/api/projects/{project_id}/jobs", list_jobs, name="list_jobs", tags=tags,
              summary="Batch jobs of a project with state and progress", parameters=p),
        Route("POST", "/api/projects/{project_id}/jobs", submit_job, name="submit_job",
              summary="Predict the whole volume with the current classifier (frozen now)",
              permission="write", parameters=p, tags=tags,
              request_body='{"export": "probabilities"|"segmentation"|"uncertainty"|'
                           '"features", "format"?: "ome-zarr"|"n5"|"precomputed"|"hdf5"|'
                           '"tiff", "output"?: path, "roi"?: "z0:z1,y0:y1,x0:x1", "level"?: '
                           'int, "memory_bytes"?: int, "engine"?: {"kind": "local"|"dask"|'
                           '"slurm", "workers", "threads", "address", "partition", '
                           '"account", "time", "mem", "cpus", "gpus", "blocks_per_task"}}',
              responses={201: "The job", 400: "Bad request", 403: "Output not allowed",
                         503: "No classifier yet"}),
        Route("GET", "/api/projects/{project_id}/jobs/{job_id}", get_job, name="get_job",
              summary="A job's state and progress (blocks done of total)", parameters=pj,
              tags=tags, responses={200: "The job", 404: "No such job"}),
        Route("GET", "/api/projects/{project_id}/jobs/{job_id}/logs", job_logs,
              name="job_logs", summary="A job's logs", parameters=pj, tags=tags,
              content_type="text/plain", responses={200: "Logs", 404: "No such job"}),
        Route("POST", "/api/projects/{project_id}/jobs/{job_id}/cancel", cancel_job,
              name="cancel_job", summary="Cancel a job", permission="write", parameters=pj,
              tags=tags, responses={200: "The job", 404: "No such job"}),
        Route("POST", "/api/projects/{project_id}/jobs/{job_id}/resume", resume_job,
              name="resume_job", summary="Resume a failed or cancelled job (finished blocks "
              "are kept)", permission="write", parameters=pj, tags=tags,
              responses={200: "The job", 400: "Not resumable", 404: "No such job"}),
        Route("POST", "/api/projects/{project_id}/jobs/{job_id}/layer", open_layer,
              name="open_job_layer", summary="Serve a finished job's output as a layer",
              permission="write", parameters=pj, tags=tags,
              responses={201: "The layer id", 400: "Job not done", 404: "No such job"}),
    ]


#: The name the other route modules use.
