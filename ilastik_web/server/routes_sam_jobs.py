"""SAM batch jobs in a project's job list (see :mod:`hpc.sam_jobs`): fine-tune a model on
a training set, precompute the embeddings of the project's volume or of a collection into
the server's embedding cache, and offer a finished fine-tuning's checkpoint as a new SAM
model. The jobs run on a configured engine named by the request, and are listed,
watched, cancelled and resumed with the project's other jobs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from hpc.engine_config import EngineRegistry
from hpc.sam_jobs import (
    EmbeddingCache,
    EmbeddingTarget,
    finetuned_model,
    submit_embeddings,
    submit_finetune,
)
from hpc.service import JobService
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.finetune import settings_from_json
from ilastik_web.sam.service import SamService
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.sources.location import check_allowed

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PROJECT = Param("project_id", description="Project id")
_JOB = Param("job_id", description="Job id")


def _engine(body: dict, engines: EngineRegistry):
    name = body.get("engine")
    if name is not None and not isinstance(name, str):
        raise InvalidRequestError("engine must be the name of a configured engine: "
                                  f"{', '.join(engines.names())}")
    return engines.get(name)


def _path(body: dict, key: str, allowed_roots: Sequence[Path] | None) -> Path:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{key} must be a path on the server")
    return check_allowed(Path(value), allowed_roots, value)


def _model_name(body: dict) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("model must be the name of a configured SAM model")
    return model


def new_model_name(body: Any, sam: SamService) -> str:
    """The ``name`` of a fine-tuning request: valid, and not a model's name yet."""
    if not isinstance(body, dict):
        raise InvalidRequestError('expected {"name": new model, ...}')
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError("name (of the new model) must be 1-64 letters, digits, "
                                  "'_', '.' or '-'")
    if name in sam.models.names:
        raise InvalidRequestError(f"a model is already named {name!r}")
    return name


def base_model(body: dict, sam: SamService):
    """The configured model a request names (``model``; default: the first)."""
    return sam.models.spec(_model_name(body))


def embedding_options(body: Any) -> tuple[str, list[int] | None, int]:
    """``(plane, slices, slices_per_block)`` of an embeddings request."""
    if not isinstance(body, dict):
        raise InvalidRequestError('expected {"slices"?: [z, ...], "plane"?: ..., ...}')
    plane = body.get("plane", "xy")
    slices = body.get("slices")
    if slices is not None and (not isinstance(slices, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in slices)):
        raise InvalidRequestError("slices must be a list of slice indices")
    per = body.get("slices_per_block", 8)
    if isinstance(per, bool) or not isinstance(per, int) or per < 1:
        raise InvalidRequestError("slices_per_block must be an integer >= 1")
    return plane, slices, per


def offer_finetuned(sam: SamService, jobs: JobService, job_id: str, body: Any,
                    allowed_roots: Sequence[Path] | None) -> dict:
    """Offer finished fine-tuning job ``job_id``'s checkpoint as a SAM model (blocking).

    ``body`` may rename it (``{"name": ...}``); the same checkpoint offered twice under one
    name is not an error.
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequestError('expected {"name"?: model name}')
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise InvalidRequestError("name must be 1-64 letters, digits, '_', '.' or '-'")
    summary = jobs.get(job_id)  # refreshes the state first
    spec = finetuned_model(jobs.store.get(job_id), name)
    check_allowed(spec.checkpoint, allowed_roots, str(spec.checkpoint))
    if spec.name in sam.models.names:
        if sam.models.spec(spec.name).checkpoint != spec.checkpoint:
            raise InvalidRequestError(f"a model is already named {spec.name!r}")
    else:
        sam.models.add(spec)
        log.info("job %s: offering %s as SAM model %r", job_id, spec.checkpoint, spec.name)
    return {"model": spec.name, "job": summary, "models": sam.models.describe()}


def sam_job_routes(services, sam: SamService, hub: ProjectHub,
                   run: Callable[[Callable[[], Any]], Awaitable[Any]], *,
                   allowed_roots: Sequence[Path] | None = None,
                   engines: EngineRegistry | None = None) -> list[Route]:
    """The SAM job routes; ``services`` is the job routes' per-project
    :class:`~ilastik_web.server.routes_jobs.JobServices` (one job list for all kinds)."""
    engines = engines or EngineRegistry()

    def context(request: web.Request):
        served = hub.get(request.match_info["project_id"])
        return served, services.of(served)

    def finetune_request(served, jobs, body: Any) -> dict:
        if not isinstance(body, dict):
            raise InvalidRequestError('expected {"training_set": dir, "name": new model, ...}')
        name = new_model_name(body, sam)
        training_set = _path(body, "training_set", allowed_roots)
        if body.get("output") is not None:
            output = _path(body, "output", allowed_roots)
        else:
            models = served.project.directory / "models"
            models.mkdir(exist_ok=True)
            output = models / f"{name}.pt"
        settings = settings_from_json(body.get("settings"))
        job = submit_finetune(jobs, base_model(body, sam), training_set, output,
                              settings, name=name, engine=_engine(body, engines),
                              project=str(served.project.directory))
        return jobs.get(job.id)

    def embeddings_request(served, jobs, body: Any) -> dict:
        if body is None:
            body = {}
        plane, slices, per = embedding_options(body)
        if body.get("collection") is not None:
            from ilastik_web.collections import Collection

            folder = _path(body, "collection", allowed_roots)
            collection = Collection.from_folder(folder, allowed_roots=allowed_roots)
            targets = [EmbeddingTarget(item.location, slices, plane)
                       for item in collection.items]
        else:
            project = served.project
            if project.source_location is None:
                raise InvalidRequestError("the project's source is in memory; embed a "
                                          "collection or a volume on disk")
            targets = [EmbeddingTarget(project.source_location, slices, plane,
                                       project.voxel_size_override)]
        job = submit_embeddings(jobs, base_model(body, sam), targets,
                                EmbeddingCache.of_store(sam.embeddings),
                                engine=_engine(body, engines), slices_per_block=per,
                                project=str(served.project.directory))
        return jobs.get(job.id)

    async def submit_finetune_job(request: web.Request) -> web.Response:
        served, jobs = context(request)
        body = await read_json(request)
        return web.json_response(await run(lambda: finetune_request(served, jobs, body)),
                                 status=201)

    async def submit_embeddings_job(request: web.Request) -> web.Response:
        served, jobs = context(request)
        body = await read_json(request) if request.can_read_body else {}
        return web.json_response(await run(lambda: embeddings_request(served, jobs, body)),
                                 status=201)

    async def job_sam_model(request: web.Request) -> web.Response:
        _, jobs = context(request)
        job_id = request.match_info["job_id"]
        body = await read_json(request) if request.can_read_body else {}
        return web.json_response(await run(lambda: offer_finetuned(sam, jobs, job_id, body,
                                                                  allowed_roots)),
                                 status=201)

    tags = ("jobs", "sam")
    return [
        Route("POST", "/api/projects/{project_id}/jobs/sam-finetune", submit_finetune_job,
              name="submit_sam_finetune", role="owner", parameters=(_PROJECT,), tags=tags,
              summary="Fine-tune a SAM model on a tiff-layout training set with micro-sam's "
                      "trainer, as a job on a configured engine (GPU when its nodes have "
                      "one); progress is the step, steps and loss",
              request_body='{"training_set": dir, "name": new model, "model"?: base, '
                           '"output"?: path (default <project>/models/<name>.pt), '
                           '"engine"?: name, "settings"?: {"iterations", "patch", '
                           '"batch_size", "lr", "n_objects_per_batch", "n_sub_iteration"}}',
              responses={201: "The job", 400: "Bad training set, name or settings",
                         403: "A path outside the allowed roots", 409: "Output exists"}),
        Route("POST", "/api/projects/{project_id}/jobs/sam-embeddings",
              submit_embeddings_job, name="submit_sam_embeddings", role="owner",
              parameters=(_PROJECT,), tags=tags,
              summary="Precompute the SAM embeddings of the project's volume (all or the "
                      "given slices) or of every item of a collection into the server's "
                      "embedding cache, as a job",
              request_body='{"slices"?: [index], "plane"?: "xy"|"xz"|"yz", "collection"?: '
                           'dir, "model"?, "engine"?: name, "slices_per_block"?: 8}',
              responses={201: "The job", 400: "Bad slices, or no on-disk cache",
                         403: "A path outside the allowed roots"}),
        Route("POST", "/api/projects/{project_id}/jobs/{job_id}/sam-model", job_sam_model,
              name="job_sam_model", role="owner", parameters=(_PROJECT, _JOB), tags=tags,
              summary="Offer a finished fine-tuning job's checkpoint as a SAM model",
              request_body='{"name"?: model name (default: the one given at submission)}',
              responses={201: "The model name and all models",
                         400: "Not a finished fine-tuning", 404: "No such job"}),
    ]
