"""SAM batch jobs of the served image collection: fine-tune a model on the collection's
own annotations, precompute the embeddings of its items, and offer a finished
fine-tuning's checkpoint as a SAM model, as jobs on the server's engines (the same
:class:`~hpc.service.JobService` and :mod:`hpc.sam_jobs` as a project's SAM jobs).

Where things go: everything the loop makes lives in the collection's ``annotations/``
folder, beside the annotations and the training sets it already holds (the provider's
images are never written): job folders in ``annotations/jobs/``, fine-tuned checkpoints in
``annotations/models/<name>.pt``, and the training set a fine-tuning exports for itself in
``annotations/training-sets/``. Jobs thus survive a server restart, and an engine whose
nodes see the collection's folder (Slurm on a shared file system) sees them too.

A fine-tuning trains on a training set the collection exported (``"training_set"``: its
name under ``annotations/training-sets/``, a ``tiff`` layout) or, by default, on a fresh
one written from every annotated item at submission. Without a collection the routes
answer 404.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hpc.engine_config import EngineRegistry
from hpc.local_process import ProcessLauncher
from hpc.sam_jobs import EmbeddingCache, EmbeddingTarget, submit_embeddings, submit_finetune
from hpc.service import JobService
from ilastik_web.collections.trainingset import export_training_set
from ilastik_web.errors import InvalidRequestError, NotFoundError
from ilastik_web.sam.finetune import settings_from_json
from ilastik_web.sam.service import SamService
from ilastik_web.server.routes_collection import TRAINING_SETS, CollectionSite
from ilastik_web.server.routes_jobs import _engine_of
from ilastik_web.server.routes_sam_jobs import (
    base_model,
    embedding_options,
    new_model_name,
    offer_finetuned,
)
from ilastik_web.server.routing import Param, Route, read_json

log = logging.getLogger(__name__)
T = TypeVar("T")

JOBS, MODELS = "jobs", "models"
_SET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class CollectionJobs:
    """The job list of a served collection (``annotations/jobs/``), made on first use."""

    def __init__(self, site: CollectionSite, launcher: ProcessLauncher | None = None):
        self.site = site
        self.launcher = launcher
        self._lock = threading.Lock()
        self._service: JobService | None = None

    @property
    def directory(self) -> Path:
        return self.site.collection.annotations.directory

    @property
    def service(self) -> JobService:
        with self._lock:
            if self._service is None:
                self._service = JobService(self.directory / JOBS, launcher=self.launcher)
            return self._service

    def training_set(self, body: dict) -> Path:
        """The training set a fine-tuning request names, or a new one of every annotated
        item (blocking)."""
        sets = self.directory / TRAINING_SETS
        name = body.get("training_set")
        if name is not None:
            if not isinstance(name, str) or not _SET_NAME.fullmatch(name):
                raise InvalidRequestError("training_set is the name of a training set the "
                                          "collection exported (POST /api/collection/exports)")
            folder = sets / name
            if not folder.is_dir():
                raise InvalidRequestError(f"the collection has no training set {name!r}; "
                                          "export one, or leave training_set out to train on "
                                          "every annotated item")
            return folder
        val_fraction = body.get("val_fraction", 0.2)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) \
                or not 0 <= val_fraction < 1:
            raise InvalidRequestError("val_fraction is a number in [0, 1)")
        collection = self.site.collection
        if not any(collection.annotations.exists(i.item_id) for i in collection.items):
            raise InvalidRequestError("no item of the collection is annotated yet")
        folder = sets / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        sets.mkdir(parents=True, exist_ok=True)
        export_training_set(collection, folder, layout="tiff",
                            val_fraction=float(val_fraction), seed=0)
        return folder

    def finetune(self, sam: SamService, body: Any, engines: EngineRegistry) -> dict:
        """Validate a fine-tuning request and start the job (blocking)."""
        if not isinstance(body, dict):
            raise InvalidRequestError('expected {"name": new model, "training_set"?: name, '
                                      '...}')
        name = new_model_name(body, sam)
        model = base_model(body, sam)
        settings = settings_from_json(body.get("settings"))
        engine = _engine_of(body, engines)
        output = self.directory / MODELS / f"{name}.pt"
        if output.exists():
            raise InvalidRequestError(f"{output} exists (a model of an earlier server); "
                                      "choose another name")
        training_set = self.training_set(body)
        output.parent.mkdir(parents=True, exist_ok=True)
        jobs = self.service
        job = submit_finetune(jobs, model, training_set, output, settings, name=name,
                              engine=engine, project=str(self.directory))
        log.info("collection job %s: fine-tuning %s on %s", job.id, model.name, training_set)
        return jobs.get(job.id)

    def embeddings(self, sam: SamService, body: Any, engines: EngineRegistry) -> dict:
        """Validate an embeddings request and start the job (blocking)."""
        if body is None:
            body = {}
        plane, slices, per = embedding_options(body)
        wanted = body.get("items")
        collection = self.site.collection
        if wanted is None:
            items = list(collection.items)
        elif isinstance(wanted, list) and wanted and all(isinstance(i, str) for i in wanted):
            items = [collection.item(i) for i in wanted]
        else:
            raise InvalidRequestError("items is a non-empty list of item ids")
        cache = EmbeddingCache.of_store(sam.embeddings)
        targets = [EmbeddingTarget(item.location, slices, plane) for item in items]
        jobs = self.service
        job = submit_embeddings(jobs, base_model(body, sam), targets, cache,
                                engine=_engine_of(body, engines), slices_per_block=per,
                                project=str(self.directory))
        return jobs.get(job.id)


def collection_job_routes(site: CollectionSite | None, sam: SamService, executor: Executor,
                          *, launcher: ProcessLauncher | None = None,
                          engines: EngineRegistry | None = None,
                          allowed_roots: Sequence[Path] | None = None) -> list[Route]:
    """Job routes of ``site`` (None: no collection is served, every route answers 404).

    Parameters
    ----------
    sam
        The server's SAM models and embedding cache.
    executor
        Where blocking work runs (validation, the export a fine-tuning starts with).
    launcher
        Starts local jobs as niced worker processes (None: threads of the server).
    engines
        The engines requests may name; ``local`` is always offered.
    allowed_roots
        Checked again when a checkpoint is offered as a model.
    """
    engines = engines or EngineRegistry()
    jobs = CollectionJobs(site, launcher) if site is not None else None

    def need() -> CollectionJobs:
        if jobs is None:
            raise NotFoundError("no image collection is served here (serve --collection DIR)")
        return jobs

    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def body_of(request: web.Request) -> Any:
        return await read_json(request, max_bytes=1 << 20) if request.can_read_body else {}

    async def list_jobs(request: web.Request) -> web.Response:
        service = need().service
        return web.json_response({"jobs": await run(service.list)})

    async def submit_finetune_job(request: web.Request) -> web.Response:
        j = need()
        body = await body_of(request)
        return web.json_response(await run(lambda: j.finetune(sam, body, engines)),
                                 status=201)

    async def submit_embeddings_job(request: web.Request) -> web.Response:
        j = need()
        body = await body_of(request)
        return web.json_response(await run(lambda: j.embeddings(sam, body, engines)),
                                 status=201)

    def job_call(method: str) -> Callable:
        async def handler(request: web.Request) -> web.Response:
            service = need().service
            job_id = request.match_info["job_id"]
            return web.json_response(await run(lambda: getattr(service, method)(job_id)))
        return handler

    async def job_logs(request: web.Request) -> web.Response:
        service = need().service
        job_id = request.match_info["job_id"]
        return web.Response(text=await run(lambda: service.logs(job_id)),
                            content_type="text/plain")

    async def job_sam_model(request: web.Request) -> web.Response:
        service = need().service
        job_id = request.match_info["job_id"]
        body = await body_of(request)
        return web.json_response(
            await run(lambda: offer_finetuned(sam, service, job_id, body, allowed_roots)),
            status=201)

    tags = ("collection", "jobs", "sam")
    job_p = (Param("job_id", description="Job id"),)
    missing = "No collection is served"
    return [
        Route("GET", "/api/collection/jobs", list_jobs, name="collection_jobs", tags=tags,
              role="owner", summary="The collection's batch jobs with state and progress",
              responses={200: "The jobs", 404: missing}),
        Route("POST", "/api/collection/jobs/sam-finetune", submit_finetune_job,
              name="collection_sam_finetune", tags=tags, role="owner",
              summary="Fine-tune a SAM model on the collection's annotations with micro-sam's "
                      "trainer, as a job on a configured engine: on a training set the "
                      "collection exported, or on a new one of every annotated item; the "
                      "checkpoint goes to annotations/models/<name>.pt",
              request_body='{"name": new model, "training_set"?: name under '
                           'annotations/training-sets (default: export one now), '
                           '"val_fraction"?: 0.2, "model"?: base, "engine"?: name, '
                           '"settings"?: {"iterations", "patch", "batch_size", "lr", '
                           '"n_objects_per_batch", "n_sub_iteration"}}',
              responses={201: "The job", 400: "Bad name, settings or training set, or "
                         "nothing annotated", 404: missing}),
        Route("POST", "/api/collection/jobs/sam-embeddings", submit_embeddings_job,
              name="collection_sam_embeddings", tags=tags, role="owner",
              summary="Precompute the SAM embeddings of every item (or the given ones) into "
                      "the server's embedding cache, as a job",
              request_body='{"items"?: [item id], "slices"?: [index], "plane"?: '
                           '"xy"|"xz"|"yz", "model"?, "engine"?: name, '
                           '"slices_per_block"?: 8}',
              responses={201: "The job", 400: "Bad slices, or no on-disk cache",
                         404: "No collection, or no such item"}),
        Route("GET", "/api/collection/jobs/{job_id}", job_call("get"),
              name="collection_job", tags=tags, role="owner", parameters=job_p,
              summary="A collection job's state and progress",
              responses={200: "The job", 404: "No such job"}),
        Route("GET", "/api/collection/jobs/{job_id}/logs", job_logs,
              name="collection_job_logs", tags=tags, role="owner", parameters=job_p,
              summary="A collection job's logs", content_type="text/plain",
              responses={200: "Logs", 404: "No such job"}),
        Route("POST", "/api/collection/jobs/{job_id}/cancel", job_call("cancel"),
              name="collection_cancel_job", tags=tags, role="owner", parameters=job_p,
              summary="Cancel a collection job",
              responses={200: "The job", 404: "No such job"}),
        Route("POST", "/api/collection/jobs/{job_id}/resume", job_call("resume"),
              name="collection_resume_job", tags=tags, role="owner", parameters=job_p,
              summary="Resume a failed or cancelled collection job",
              responses={200: "The job", 400: "Not resumable", 404: "No such job"}),
        Route("POST", "/api/collection/jobs/{job_id}/sam-model", job_sam_model,
              name="collection_job_sam_model", tags=tags, role="owner", parameters=job_p,
              summary="Offer a finished fine-tuning job's checkpoint as a SAM model",
              request_body='{"name"?: model name (default: the one given at submission)}',
              responses={201: "The model name and all models",
                         400: "Not a finished fine-tuning", 404: "No such job"}),
    ]
