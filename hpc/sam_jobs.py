"""SAM work as batch jobs on any engine (local, dask, Slurm): fine-tuning, and embeddings
in bulk.

A SAM job is a job folder like an export's (:mod:`hpc.job`), without a classifier or a
block plan: its ``spec.params`` say what each block does, and :func:`run_task_block` is
what a worker runs for one block, whichever engine started it.

- ``sam-finetune``: one block, :func:`ilastik_web.sam.finetune.finetune` (micro-sam's
  trainer) on CUDA when the worker has it, else on the CPU. Each step writes the job's
  ``progress.json`` (step of steps, loss, epoch) and looks at its cancel flag; the
  result (checkpoint path, model type, speed) goes to ``result.json``, and the server
  offers the checkpoint as a new SAM model.
- ``sam-embeddings``: one block per group of slices of the volumes to embed (a project's
  source, or the items of a collection). Each slice goes through the server's own
  :class:`~ilastik_web.sam.embeddings.EmbeddingStore` over the same on-disk cache, with
  the same tiling and size limit, so the entries have the keys and format the server
  reads, and the least recently used are evicted as the server would.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hpc.job import EngineSpec, Job, JobSpec, write_json_atomic
from hpc.service import JobService
from ilastik_web.errors import ConflictError, InvalidRequestError
from ilastik_web.sam.finetune import FinetuneSettings
from ilastik_web.sam.models import ModelSpec

log = logging.getLogger(__name__)

FINETUNE, EMBEDDINGS = "sam-finetune", "sam-embeddings"
#: Most slices one embedding job may cover.
MAX_JOB_SLICES = 100_000


def _model_json(spec: ModelSpec) -> dict:
    return {"name": spec.name, "model_type": spec.model_type,
            "checkpoint": str(Path(spec.checkpoint).resolve())}


def _model_of(data: dict) -> ModelSpec:
    return ModelSpec(data["name"], data["model_type"], Path(data["checkpoint"]))


# -- submission ------------------------------------------------------------------------------


def submit_finetune(jobs: JobService, model: ModelSpec, training_set: str | Path,
                    output: str | Path, settings: FinetuneSettings, *, name: str,
                    engine: EngineSpec | None = None, project: str | None = None,
                    background: bool = True) -> Job:
    """Start fine-tuning ``model`` on a tiff-layout training set as a job.

    ``name`` is the name the result is offered under once loaded (see
    :func:`finetuned_model`).

    Raises
    ------
    InvalidRequestError
        The training set is not a tiff layout, or the model's checkpoint is missing.
    ConflictError
        ``output`` exists.
    """
    training_set = Path(training_set).resolve()
    output = Path(output).resolve()
    if not (training_set / "train" / "images").is_dir() \
            or not (training_set / "train" / "labels").is_dir():
        raise InvalidRequestError(f"{training_set} is not a tiff-layout training set "
                                  "(train/images, train/labels)")
    if not Path(model.checkpoint).is_file():
        raise InvalidRequestError(f"model {model.name!r}: checkpoint {model.checkpoint} "
                                  "is missing")
    if output.exists():
        raise ConflictError(f"{output} exists; choose a new checkpoint path")
    ModelSpec(name, model.model_type, output)  # checks the name now, not after training
    spec = JobSpec(source=str(training_set), output=str(output), format="checkpoint",
                   export=FINETUNE, engine=engine or EngineSpec(), project=project,
                   kind=FINETUNE,
                   params={"model": _model_json(model), "name": name,
                           "training_set": str(training_set),
                           "settings": asdict(settings)})
    return jobs.submit_task(spec, 1, background=background)


@dataclass(frozen=True)
class EmbeddingTarget:
    """The slices of one volume to embed.

    Attributes
    ----------
    location
        What :func:`ilastik_web.sources.open_source` opens (level 0 is embedded).
    slices
        Slice indices along the plane's normal (None: all).
    plane
        ``"xy"`` (z slices), ``"xz"`` or ``"yz"``.
    voxel_size
        Voxel size override, as the project opened the source.
    """

    location: str
    slices: Sequence[int] | None = None
    plane: str = "xy"
    voxel_size: Sequence[float] | None = None


@dataclass(frozen=True)
class EmbeddingCache:
    """The on-disk cache the server reads, as it is configured there."""

    directory: Path
    disk_bytes: int | None = None
    tile_size: int | None = None
    halo: int = 64

    @classmethod
    def of_store(cls, store) -> EmbeddingCache:
        """The settings of a server's :class:`~ilastik_web.sam.embeddings.EmbeddingStore`."""
        if store.directory is None:
            raise InvalidRequestError("the server keeps SAM embeddings in memory only; "
                                      "give it an embedding cache folder to fill in bulk")
        return cls(Path(store.directory).resolve(), store.disk_bytes, store.tile_size,
                   store.halo)


def submit_embeddings(jobs: JobService, model: ModelSpec, targets: Sequence[EmbeddingTarget],
                      cache: EmbeddingCache, *, engine: EngineSpec | None = None,
                      slices_per_block: int = 8, project: str | None = None,
                      background: bool = True) -> Job:
    """Start embedding every slice of ``targets`` into ``cache`` as a job.

    Raises
    ------
    InvalidRequestError
        No target, a plane or slice outside a volume, too many slices, or a missing
        checkpoint.
    """
    from ilastik_web.sam.geometry import SliceRef, check_plane
    from ilastik_web.sources import open_source

    if not targets:
        raise InvalidRequestError("nothing to embed")
    if not Path(model.checkpoint).is_file():
        raise InvalidRequestError(f"model {model.name!r}: checkpoint {model.checkpoint} "
                                  "is missing")
    if int(slices_per_block) < 1:
        raise InvalidRequestError("slices_per_block must be >= 1")
    units: list[list[int]] = []
    described = []
    for t, target in enumerate(targets):
        plane = check_plane(target.plane)
        volume = open_source(target.location, voxel_size=target.voxel_size).base
        normal = SliceRef(volume.shape, plane, 0).normal
        depth = volume.shape[normal]
        indices = range(depth) if target.slices is None else sorted(set(target.slices))
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < depth:
                raise InvalidRequestError(f"{target.location}: slice {index!r} outside "
                                          f"0..{depth - 1}")
            units.append([t, int(index)])
        described.append({"location": target.location, "plane": plane,
                          "voxel_size": list(target.voxel_size) if target.voxel_size else None})
        if len(units) > MAX_JOB_SLICES:
            raise InvalidRequestError(f"at most {MAX_JOB_SLICES} slices per job")
    if not units:
        raise InvalidRequestError("no slices to embed")
    per = int(slices_per_block)
    blocks = [units[i:i + per] for i in range(0, len(units), per)]
    spec = JobSpec(source=described[0]["location"], output=str(cache.directory),
                   format="sam-cache", export=EMBEDDINGS, engine=engine or EngineSpec(),
                   project=project, kind=EMBEDDINGS,
                   params={"model": _model_json(model), "targets": described,
                           "blocks": blocks,
                           "cache": {"directory": str(cache.directory),
                                     "disk_bytes": cache.disk_bytes,
                                     "tile_size": cache.tile_size, "halo": cache.halo}})
    return jobs.submit_task(spec, len(blocks), background=background)


def finetuned_model(job: Job, name: str | None = None) -> ModelSpec:
    """The model a finished fine-tuning job wrote (named ``name``, default: the name given
    at submission)."""
    spec = job.spec
    if spec.kind != FINETUNE:
        raise InvalidRequestError(f"job {job.id} is not a SAM fine-tuning")
    result = job.result()
    if job.state != "DONE" or result is None:
        raise InvalidRequestError(f"job {job.id} is not done")
    checkpoint = Path(result["checkpoint"])
    if not checkpoint.is_file():
        raise InvalidRequestError(f"job {job.id}: its checkpoint {checkpoint} is gone")
    return ModelSpec(name or spec.params["name"], result["model_type"], checkpoint)


# -- on the worker ---------------------------------------------------------------------------


def run_task_block(job: Job, spec: JobSpec, index: int) -> bool:
    """Compute block ``index`` of a SAM job; False when its cancel flag stopped it."""
    if spec.kind == FINETUNE:
        return _finetune_block(job, spec)
    if spec.kind == EMBEDDINGS:
        return _embedding_block(job, spec, index)
    raise InvalidRequestError(f"job {job.id}: unknown task kind {spec.kind!r}")


def _finetune_block(job: Job, spec: JobSpec) -> bool:
    from ilastik_web.sam.embeddings import Cancelled
    from ilastik_web.sam.finetune import finetune
    from ilastik_web.sam.models import choose_device

    params = spec.params or {}
    raw = dict(params["settings"])
    raw["patch_shape"] = tuple(raw["patch_shape"])
    settings = FinetuneSettings(**raw)
    device = choose_device(None)
    job.append_log("driver", f"fine-tuning {params['model']['name']} for "
                             f"{settings.iterations} steps on {device}")

    def on_step(info: dict) -> None:
        loss = info.get("loss")
        message = f"step {info['step']} of {info['steps']}" + (
            f", loss {loss:.4f}" if loss is not None else "")
        write_json_atomic(job.progress_path, {**info, "device": device, "message": message,
                                              "time": time.time()})

    try:
        result = finetune(_model_of(params["model"]), Path(params["training_set"]),
                          Path(spec.output), settings, device=device, on_step=on_step,
                          should_stop=lambda: job.cancel_requested)
    except Cancelled:
        return False
    write_json_atomic(job.progress_path, {"step": settings.iterations,
                                          "steps": settings.iterations,
                                          "loss": result.get("final_loss"), "device": device,
                                          "message": f"{settings.iterations} steps done"})
    write_json_atomic(job.result_path, {**result, "name": params["name"]})
    job.append_log("driver", f"checkpoint {result['checkpoint']} "
                             f"({result['steps_per_s']} steps/s)")
    return True


@functools.lru_cache(maxsize=2)
def _loaded(name: str, model_type: str, checkpoint: str):
    from ilastik_web.sam.models import load_model

    return load_model(ModelSpec(name, model_type, Path(checkpoint)), None)


@functools.lru_cache(maxsize=2)
def _store(directory: str, disk_bytes: int | None, tile_size: int | None, halo: int):
    from ilastik_web.sam.embeddings import EmbeddingStore

    # No memory cache: each slice is embedded once, straight to disk.
    return EmbeddingStore(0, Path(directory), tile_size=tile_size, halo=halo,
                          disk_bytes=disk_bytes)


@functools.lru_cache(maxsize=8)
def _volume(location: str, voxel_size: tuple | None):
    from ilastik_web.sources import open_source

    return open_source(location, voxel_size=voxel_size).base


def _embedding_block(job: Job, spec: JobSpec, index: int) -> bool:
    from ilastik_web.sam.embeddings import Cancelled
    from ilastik_web.sam.geometry import SliceRef

    params = spec.params or {}
    model = params["model"]
    loaded = _loaded(model["name"], model["model_type"], model["checkpoint"])
    cache = params["cache"]
    store = _store(cache["directory"], cache["disk_bytes"], cache["tile_size"],
                   int(cache["halo"]))
    computed = 0
    units = params["blocks"][index]
    for t, z in units:
        if job.cancel_requested:
            return False
        target = params["targets"][t]
        voxel_size = tuple(target["voxel_size"]) if target.get("voxel_size") else None
        volume = _volume(target["location"], voxel_size)
        ref = SliceRef(volume.shape, target["plane"], int(z))
        try:
            embedding = store.get(volume, ref, loaded, lambda: job.cancel_requested)
        except Cancelled:
            return False
        computed += embedding.computed
    job.append_log(f"worker-{os.getpid()}",
                   f"block {index}: {len(units)} slices, {computed} embedded on "
                   f"{loaded.device}, {len(units) - computed} already cached")
    return True
