"""Batch-job routes: submit from a project (its classifier frozen), list, status with
progress, logs, cancel, resume, and open a finished export as a viewer layer.

Jobs live in ``<project folder>/jobs/`` (see :mod:`hpc.job`), so they survive a server
restart: listing or asking for a job refreshes its state from the folder (and from
``squeue`` for Slurm jobs).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hpc.engine_config import EngineRegistry
from hpc.job import FORMATS, EngineSpec
from hpc.local_process import ProcessLauncher
from hpc.plan import parse_roi
from hpc.service import JobService
from hpc.writers import is_object_output
from ilastik_web.cache import ArrayCache
from ilastik_web.classify.blockwise import OUTPUT_DTYPES, OUTPUTS, output_dtype
from ilastik_web.errors import ForbiddenError, InvalidRequestError
from ilastik_web.resources import EXPORT_NICE, Resources
from ilastik_web.server.project_layers import export_display
from ilastik_web.server.projects import ProjectHub, ServedProject
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.sources.location import check_allowed

log = logging.getLogger(__name__)
T = TypeVar("T")

_SUFFIX = {"ome-zarr": ".ome.zarr", "ome-zarr-0.5": ".ome.zarr", "n5": ".n5",
           "precomputed": ".precomputed", "hdf5": ".h5", "tiff": ".tif"}
_SUBMIT_SCHEMA = {
    "type": "object", "required": ["export"],
    "properties": {
        "export": {"enum": list(OUTPUTS)},
        "format": {"enum": list(FORMATS)},
        "output": {"type": "string"},
        "roi": {"type": "string", "pattern": r"^[0-9:,]*$"},
        "level": {"type": "integer", "minimum": 0},
        "memory_bytes": {"type": "integer", "minimum": 1},
        "engine": {"type": "string"},
        "dtype": {"enum": sorted({d for ds in OUTPUT_DTYPES.values() for d in ds})},
    },
}
_PROJECT = Param("project_id", description="Project id")
_JOB = Param("job_id", description="Job id")


class JobServices:
    """One :class:`JobService` per open project (its ``jobs/`` folder)."""

    def __init__(self, hub: ProjectHub, launcher: ProcessLauncher | None = None):
        self.hub = hub
        self.launcher = launcher
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
                service = self._services[served.project_id] = JobService(
                    directory / "jobs", launcher=self.launcher)
            return service


def _engine_of(body: dict[str, Any], engines: EngineRegistry) -> EngineSpec:
    """The configured engine the body names; engines are never described by a request."""
    name = body.get("engine")
    if name is not None and not isinstance(name, str):
        raise InvalidRequestError("engine must be the name of a configured engine: "
                                  f"{', '.join(engines.names())}")
    return engines.get(name)


def _check_object_allowed(output: str, allowed_roots: Sequence[Path] | None) -> None:
    """``s3://`` outputs: allowed under an ``--allow-root s3://bucket/prefix`` (or when no
    roots are set)."""
    if allowed_roots is None:
        return
    folder = output.strip().rstrip("/")
    for root in allowed_roots:
        text = str(root)
        if text.startswith("s3:/") and not text.startswith("s3://"):
            text = "s3://" + text[len("s3:/"):]  # Path() folds the double slash
        if text.startswith("s3://") and (folder + "/").startswith(text.rstrip("/") + "/"):
            return
    raise ForbiddenError(f"{folder}: outside the allowed data folders")


def submit_request(served: ServedProject, service: JobService, body: Any,
                   allowed_roots: Sequence[Path] | None,
                   engines: EngineRegistry | None = None):
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
    engine = _engine_of(body, engines or EngineRegistry())
    dtype = body.get("dtype")
    if dtype is not None:
        if not isinstance(dtype, str):
            raise InvalidRequestError("dtype must be a string such as \"float32\"")
        output_dtype(export, dtype)  # refuses a dtype this export cannot be stored as
    project = served.project
    output = body.get("output")
    if output is None:
        exports = project.directory / "exports"
        exports.mkdir(exist_ok=True)
        output = exports / f"g{project.generation}-{export}-{secrets.token_hex(4)}" \
                           f"{_SUFFIX[fmt]}"
    elif not isinstance(output, str) or not output.strip():
        raise InvalidRequestError("output must be a path")
    if is_object_output(output):
        _check_object_allowed(output, allowed_roots)
    else:
        # The output itself is resolved (a symlink to outside the roots is refused), then
        # reserved atomically by the service.
        output = check_allowed(Path(output), allowed_roots, output)
    roi = body.get("roi")
    if roi is not None:
        if not isinstance(roi, str):
            raise InvalidRequestError('roi must look like "z0:z1,y0:y1,x0:x1"')
        if level >= len(project.source):
            raise InvalidRequestError(f"level {level} outside 0..{len(project.source) - 1}")
        roi = parse_roi(roi, project.source.levels[level].shape)
    return service.submit_from_project(project, output=output, format=fmt, export=export,
                                       level=level, roi=roi, engine=engine,
                                       memory_bytes=memory, background=True, dtype=dtype)


def job_routes(hub: ProjectHub, executor: Executor, *, cache: ArrayCache | None = None,
               allowed_roots: Sequence[Path] | None = None,
               resources: Resources | None = None,
               engines: EngineRegistry | Mapping[str, EngineSpec] | None = None,
               sam=None, launcher: ProcessLauncher | None = None) -> list[Route]:
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
    resources
        With them, local jobs run in worker processes at a lower OS priority with
        ``resources.export_threads`` threads (their CPU share) instead of in a thread of
        the server.
    engines
        The engines requests may name, from the server's configuration (``--engine``,
        ``--engines``); ``local`` is always offered.
    sam
        The server's :class:`~ilastik_web.sam.service.SamService`: with it, SAM
        fine-tuning and bulk embeddings are jobs too (:mod:`.routes_sam_jobs`).
    launcher
        The app's launcher of local job processes (default: one of this function's own,
        with ``resources.export_threads``).
    """
    if launcher is None and resources is not None:
        launcher = ProcessLauncher(resources.export_threads, EXPORT_NICE)
    services = JobServices(hub, launcher)
    if not isinstance(engines, EngineRegistry):
        engines = EngineRegistry(engines)

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
        job = await run(lambda: submit_request(served, service, body, allowed_roots, engines))
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
            # Checked again: the path may have been replaced since the job was submitted.
            check_allowed(Path(summary["output"]), allowed_roots, summary["output"])
            volume = service.output_source(job_id)
            kind = "segmentation" if summary["export"] == "segmentation" else "image"
            # A short name (the layer bar is narrow) and the project's class colours.
            layer = StaticLayer(f"{served.project_id}-job-{job_id}", volume, kind=kind,
                                name=f"{summary['export']} {job_id.rsplit('-', 1)[-1]}",
                                cache=cache, location=summary["output"],
                                display=export_display(summary["export"], volume,
                                                       served.project.classes))
            hub.registry.replace(layer)
            return {"layer_id": layer.layer_id, "job": summary}

        return web.json_response(await run(register), status=201)

    async def list_engines(request: web.Request) -> web.Response:
        return web.json_response({"engines": engines.describe()})

    p = (_PROJECT,)
    pj = (_PROJECT, _JOB)
    tags = ("jobs",)
    extra: list[Route] = []
    if sam is not None:
        from ilastik_web.server.routes_sam_jobs import sam_job_routes

        extra = sam_job_routes(services, sam, hub, run, allowed_roots=allowed_roots,
                               engines=engines)
    return extra + [
        Route("GET", "/api/engines", list_engines, name="list_engines", tags=tags,
              summary="The batch engines this server offers (configured by its operator)"),
        Route("GET", "/api/projects/{project_id}/jobs", list_jobs, name="list_jobs",
              role="owner", tags=tags,
              summary="Batch jobs of a project with state and progress", parameters=p),
        Route("POST", "/api/projects/{project_id}/jobs", submit_job, name="submit_job",
              summary="Predict the whole volume with the current classifier (frozen now)",
              role="owner", parameters=p, tags=tags,
              request_body='{"export": "probabilities"|"segmentation"|"uncertainty"|'
                           '"features", "format"?: "ome-zarr"|"n5"|"precomputed"|"hdf5"|'
                           '"tiff", "output"?: path, "roi"?: "z0:z1,y0:y1,x0:x1", "level"?: '
                           'int, "memory_bytes"?: int, "engine"?: name of a configured '
                           'engine (GET /api/engines), "dtype"?: "uint8"|"uint16"|'
                           '"float32" (probabilities and uncertainty: 0..255, 0..65535 or '
                           '0..1; segmentation: uint8|uint16)}',
              body_schema=_SUBMIT_SCHEMA,
              responses={201: "The job", 400: "Bad request", 403: "Output not allowed",
                         409: "Output exists", 503: "No classifier yet"}),
        Route("GET", "/api/projects/{project_id}/jobs/{job_id}", get_job, name="get_job",
              summary="A job's state and progress (blocks done of total)", parameters=pj,
              role="owner", tags=tags, responses={200: "The job", 404: "No such job"}),
        Route("GET", "/api/projects/{project_id}/jobs/{job_id}/logs", job_logs,
              name="job_logs", summary="A job's logs", parameters=pj, role="owner", tags=tags,
              content_type="text/plain", responses={200: "Logs", 404: "No such job"}),
        Route("POST", "/api/projects/{project_id}/jobs/{job_id}/cancel", cancel_job,
              name="cancel_job", summary="Cancel a job", role="owner", parameters=pj,
              tags=tags, responses={200: "The job", 404: "No such job"}),
        Route("POST", "/api/projects/{project_id}/jobs/{job_id}/resume", resume_job,
              name="resume_job", summary="Resume a failed or cancelled job (finished blocks "
              "are kept)", role="owner", parameters=pj, tags=tags,
              responses={200: "The job", 400: "Not resumable", 404: "No such job"}),
        Route("POST", "/api/projects/{project_id}/jobs/{job_id}/layer", open_layer,
              name="open_job_layer", summary="Serve a finished job's output as a layer",
              role="owner", parameters=pj, tags=tags,
              responses={201: "The layer id", 400: "Job not done", 404: "No such job"}),
    ]


#: The name the other route modules use.
