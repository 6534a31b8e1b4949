"""The SAM prompt service: prompts to masks, precomputed embeddings, 3D propagation and
accepting masks into labels or instance annotations.

Synchronous and thread-safe; the HTTP routes call it from their own worker threads.
Prompts are admitted up to a limit (beyond it :class:`TooManyRequestsError`), embedding
precomputation and propagation run as background :class:`~ilastik_web.sam.tasks.Task`
objects on the service's own threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels import EditResult
from ilastik_web.sam.automatic import AutoParams, Decoders, objects_of, segment_everything
from ilastik_web.sam.embeddings import Cancelled, EmbeddingStore, slice_image
from ilastik_web.sam.finetune import FinetuneSettings, finetune
from ilastik_web.sam.geometry import SlicePlane, SliceRef, check_plane, in_plane_axes
from ilastik_web.sam.masks import MaskStore, SamMask
from ilastik_web.sam.models import ModelRegistry, ModelSpec
from ilastik_web.sam.prompts import Prompt, decode
from ilastik_web.sam.propagation import PROJECTIONS, Projection, propagate
from ilastik_web.sam.tasks import AdmissionLimit, Task, TaskQueue

log = logging.getLogger(__name__)

#: Most slices one precompute or propagation task may cover.
MAX_TASK_SLICES = 4096


@dataclass(frozen=True)
class SamSettings:
    """How the service runs.

    Attributes
    ----------
    models
        The models offered (checkpoint files; nothing is downloaded).
    device
        Force "cpu" / "cuda"; default: CUDA when present, else CPU.
    embedding_cache_bytes
        In-memory embedding budget (a 1024² tile of a released model takes 4 MiB).
    embedding_dir
        On-disk (zarr) embedding cache; None: memory only.
    embedding_disk_bytes
        Size limit of the on-disk cache (least recently used entries go first); None: none.
    tile_size, halo
        Tiling of large slices (default tile: the model's input size).
    max_active_prompts
        Prompt requests admitted at once (queued and running); more answer 429.
    prompt_workers, task_workers
        Threads decoding prompts / running background tasks.
    max_pending_tasks
        Background tasks queued or running at once; more answer 429.
    """

    models: tuple[ModelSpec, ...] = ()
    device: str | None = None
    embedding_cache_bytes: int = 1 << 30
    embedding_dir: Path | None = None
    embedding_disk_bytes: int | None = None
    tile_size: int | None = None
    halo: int = 64
    max_active_prompts: int = 8
    prompt_workers: int = 2
    task_workers: int = 1
    max_pending_tasks: int = 16


class SamService:
    """Everything SAM, for any lazy volume (addressed by a ``source`` name the caller picks).

    Parameters
    ----------
    settings
        See :class:`SamSettings`.
    """

    def __init__(self, settings: SamSettings | None = None):
        self.settings = settings or SamSettings()
        self.models = ModelRegistry(self.settings.models, self.settings.device)
        self.embeddings = EmbeddingStore(
            self.settings.embedding_cache_bytes, self.settings.embedding_dir,
            tile_size=self.settings.tile_size, halo=self.settings.halo,
            disk_bytes=self.settings.embedding_disk_bytes,
        )
        self.masks = MaskStore()
        self.decoders = Decoders()
        self.tasks = TaskQueue(self.settings.task_workers, self.settings.max_pending_tasks)
        self.prompt_limit = AdmissionLimit(self.settings.max_active_prompts, "SAM prompts")
        #: Threads for prompts (embedding on demand, decoding): never the chunk-serving pool.
        self.prompt_executor = ThreadPoolExecutor(self.settings.prompt_workers,
                                                  thread_name_prefix="sam-prompt")

    def close(self) -> None:
        self.tasks.close()
        self.prompt_executor.shutdown(wait=False, cancel_futures=True)

    # -- prompts ---------------------------------------------------------------------------

    def prompt(
        self,
        volume: LazyVolume,
        source: str,
        plane: str,
        index: int,
        *,
        points_xyz: Sequence[Sequence[float]] = (),
        point_labels: Sequence[int] = (),
        box_xyz: Sequence[Sequence[float]] | None = None,
        previous_mask_id: str | None = None,
        model: str | None = None,
        multimask: bool | None = None,
    ) -> SamMask:
        """Decode a prompt on slice ``index`` of ``plane``; the mask waits for accept/reject.

        Coordinates are continuous level-0 voxel coordinates in viewer order (x, y, z);
        a box is given by two opposite corners. Call inside :meth:`admit_prompt` to apply
        the request limit.
        """
        ref = SliceRef(volume.shape, check_plane(plane), index)
        loaded = self.models.get(model)
        logits = tile = None
        if previous_mask_id:
            previous = self.masks.get(previous_mask_id)
            if (previous.volume_key != volume.key or previous.plane != ref.plane
                    or previous.box.start[ref.normal] != ref.index
                    or previous.model_name != loaded.spec.name or previous.logits is None):
                raise InvalidRequestError(
                    "the previous mask is from another slice, volume or model"
                )
            logits, tile = previous.logits, previous.tile
        box_cr = None
        if box_xyz is not None:
            corners = np.asarray(box_xyz, dtype=np.float64)
            if corners.shape != (2, 3):
                raise InvalidRequestError("box_xyz must be two corners [[x, y, z], [x, y, z]]")
            pixels = ref.to_pixels(corners)
            box_cr = (pixels[0, 0], pixels[0, 1], pixels[1, 0], pixels[1, 1])
        points = np.asarray(points_xyz, dtype=np.float64)
        if points.size and (points.ndim != 2 or points.shape[1] != 3):
            raise InvalidRequestError("points_xyz must be a list of [x, y, z]")
        prompt = Prompt.make(ref.to_pixels(points) if points.size else (), point_labels,
                             box_cr, logits, tile)
        embedding = self.embeddings.get(volume, ref, loaded)
        decoded = decode(loaded, embedding, prompt, multimask)
        return self.masks.put(SamMask(
            mask_id=MaskStore.new_id(), source=source, volume_key=volume.key,
            volume_shape=volume.shape, plane=ref.plane,
            box=ref.box_of(decoded.image_box), mask=_expand(decoded.mask, ref),
            model_name=loaded.spec.name, scores={ref.index: decoded.score},
            logits=decoded.logits, tile=decoded.tile, kind="prompt",
        ))

    def admit_prompt(self):
        """Context manager holding one of the prompt slots (TooManyRequestsError if none)."""
        return self.prompt_limit.admit()

    # -- background tasks -------------------------------------------------------------------

    def precompute(self, volume: LazyVolume, source: str, plane: str, start: int, stop: int,
                   model: str | None = None) -> Task:
        """Embed slices ``start..stop-1`` of ``plane`` in the background."""
        check_plane(plane)
        first = SliceRef(volume.shape, plane, start)  # type: ignore[arg-type]
        stop = min(int(stop), volume.shape[first.normal])
        if stop <= start or stop - start > MAX_TASK_SLICES:
            raise InvalidRequestError(f"slice range must hold 1..{MAX_TASK_SLICES} slices")
        spec = self.models.spec(model)
        params = {"source": source, "plane": plane, "start": start, "stop": stop,
                  "model": spec.name}

        def run(task: Task) -> dict[str, Any]:
            loaded = self.models.get(spec.name)
            computed = 0
            for i, index in enumerate(range(start, stop)):
                if task.should_stop():
                    break
                embedding = self.embeddings.get(volume, first.with_index(index), loaded,
                                                task.should_stop)
                computed += embedding.computed
                task.report((i + 1) / (stop - start), f"slice {index}")
            return {"slices": stop - start, "computed": computed}

        return self.tasks.submit("precompute", params, run)

    def propagate(self, volume: LazyVolume, mask_id: str, *, lower: int, upper: int,
                  iou_threshold: float = 0.8, projection: Projection = "mask",
                  model: str | None = None) -> Task:
        """Propagate a single-slice mask through slices ``lower..upper`` in the background.

        The task's result holds the ``mask_id`` of the 3D preview (see :meth:`accept_*`).
        """
        seed = self.masks.get(mask_id)
        if seed.volume_key != volume.key:
            raise InvalidRequestError("the mask was made on another volume")
        if projection not in PROJECTIONS:
            raise InvalidRequestError(f"projection must be one of {PROJECTIONS}")
        if not 0.0 <= float(iou_threshold) <= 1.0:
            raise InvalidRequestError("iou_threshold must be in [0, 1]")
        indices = seed.slice_indices
        if len(indices) != 1:
            raise InvalidRequestError("propagate a mask of one slice")
        if upper - lower > MAX_TASK_SLICES:
            raise InvalidRequestError(f"propagate through at most {MAX_TASK_SLICES} slices")
        spec = self.models.spec(model or seed.model_name)
        start = SliceRef(volume.shape, seed.plane, indices[0])
        _, image_box, image = seed.slice_mask(start.index)
        start_mask = np.zeros(start.image_shape, dtype=bool)
        start_mask[image_box.slices] = image
        params = {"mask_id": mask_id, "lower": lower, "upper": upper,
                  "iou_threshold": iou_threshold, "projection": projection, "model": spec.name}

        def run(task: Task) -> dict[str, Any]:
            loaded = self.models.get(spec.name)
            result = propagate(volume, self.embeddings, loaded, start, start_mask,
                               lower=lower, upper=upper, iou_threshold=iou_threshold,
                               projection=projection, report=task.report,
                               should_stop=task.should_stop)
            mask = self._stack(volume, seed, result.masks)
            mask.scores.update(result.scores)
            self.masks.put(mask)
            return {"mask_id": mask.mask_id, "slices": sorted(result.masks),
                    "stopped": result.stopped}

        return self.tasks.submit("propagate", params, run)

    def segment_automatic(self, volume: LazyVolume, source: str, plane: str, index: int, *,
                          params: AutoParams, region: Box | None = None, depth: int = 1,
                          model: str | None = None, sink=None) -> Task:
        """Segment every object of a slice region, or of a block of ``depth`` slices from
        ``index`` on, with micro-sam's AMG or AIS (see :mod:`ilastik_web.sam.automatic`),
        in the background.

        ``region`` is a (row, column) box of the slice image (default: the whole slice).
        ``sink(objects)`` receives the objects as (z, y, x) boxes and boolean masks when the
        task finishes (e.g. an :class:`~ilastik_web.sam.instances.InstanceStore`'s adder)
        and returns what the task's result reports as ``object_ids``.
        """
        first = SliceRef(volume.shape, check_plane(plane), index)  # type: ignore[arg-type]
        depth = int(depth)
        if not 1 <= depth <= MAX_TASK_SLICES or index + depth > volume.shape[first.normal]:
            raise InvalidRequestError("the block's slices must lie inside the volume")
        whole = Box.from_shape(first.image_shape)
        region = whole if region is None else region.intersect(whole)
        if region.is_empty:
            raise InvalidRequestError("the region is empty or outside the slice")
        spec = self.models.spec(model)
        task_params = {"source": source, "plane": plane, "index": index, "depth": depth,
                       "region": [list(region.start), list(region.stop)], "model": spec.name,
                       **params.to_json()}

        def run(task: Task) -> dict[str, Any]:
            loaded = self.models.get(spec.name)
            decoder = self.decoders.get(loaded) if params.method != "amg" else None
            images = []
            for i in range(depth):
                if task.should_stop():
                    raise Cancelled("automatic segmentation cancelled")
                images.append(slice_image(volume, first.with_index(index + i))[region.slices])
                task.report(0.1 * (i + 1) / depth, f"read slice {index + i}")
            image = images[0] if depth == 1 else np.stack(images)
            task.report(0.1, "segmenting")
            labels = segment_everything(loaded, image, params, decoder,
                                        halo=self.embeddings.halo)
            if depth == 1:
                labels = labels[None]
            # (normal, rows, cols) -> (z, y, x)
            order = [first.normal, *in_plane_axes(first.plane)]
            labels_zyx = labels.transpose([order.index(a) for a in range(3)])
            origin = [0, 0, 0]
            origin[first.normal] = index
            origin[order[1]], origin[order[2]] = region.start
            objects = [(box.translate(origin), mask) for box, mask in objects_of(labels_zyx)]
            ids = sink(objects) if sink is not None and objects else []
            method = params.method
            if method == "auto":
                method = "ais" if decoder is not None else "amg"
            return {"objects": len(objects), "method": method, "object_ids": list(ids)}

        return self.tasks.submit("automatic", task_params, run)

    def finetune(self, training_set: Path, output: Path, *, name: str,
                 settings: FinetuneSettings, model: str | None = None) -> Task:
        """Fine-tune ``model`` on a tiff-layout training set in the background (see
        :mod:`ilastik_web.sam.finetune`); when done, the checkpoint at ``output`` is offered
        as the new model ``name`` (same model type), ready for the next round of prompts.
        """
        base = self.models.spec(model)
        new_spec = ModelSpec(name, base.model_type, Path(output))
        if name in self.models.names:
            raise InvalidRequestError(f"a model is already named {name!r}")
        if Path(output).exists():
            raise InvalidRequestError(f"{output} exists; choose a new checkpoint path")
        params = {"training_set": str(training_set), "output": str(output), "name": name,
                  "model": base.name, **asdict(settings)}

        def run(task: Task) -> dict[str, Any]:
            result = finetune(base, Path(training_set), Path(output), settings,
                              device=self.settings.device,
                              progress=lambda done, total: task.report(
                                  done / max(total, 1), f"step {done} of {total}"),
                              should_stop=task.should_stop)
            self.models.add(new_spec)
            return {**result, "model": name}

        return self.tasks.submit("finetune", params, run)

    def _stack(self, volume: LazyVolume, seed: SamMask, masks: dict[int, np.ndarray]) -> SamMask:
        """One 3D mask from full-slice 2D masks, cropped to what they cover."""
        plane: SlicePlane = seed.plane
        rows, cols = in_plane_axes(plane)
        lo, hi = min(masks), max(masks) + 1
        any_rows = np.zeros(volume.shape[rows], dtype=bool)
        any_cols = np.zeros(volume.shape[cols], dtype=bool)
        for m in masks.values():
            any_rows |= m.any(axis=1)
            any_cols |= m.any(axis=0)
        r = np.flatnonzero(any_rows)
        c = np.flatnonzero(any_cols)
        image_box = Box((int(r[0]), int(c[0])), (int(r[-1]) + 1, int(c[-1]) + 1))
        ref = SliceRef(volume.shape, plane, lo)
        box = ref.box_of(image_box)
        start, stop = list(box.start), list(box.stop)
        start[ref.normal], stop[ref.normal] = lo, hi
        box = Box(tuple(start), tuple(stop))
        stack = np.zeros(box.shape, dtype=bool)
        for index, m in masks.items():
            target = [slice(None)] * 3
            target[ref.normal] = index - lo
            stack[tuple(target)] = m[image_box.slices]
        return SamMask(
            mask_id=MaskStore.new_id(), source=seed.source, volume_key=seed.volume_key,
            volume_shape=seed.volume_shape, plane=plane, box=box, mask=stack,
            model_name=seed.model_name, scores=dict(seed.scores), kind="propagated",
        )

    # -- accept / reject ----------------------------------------------------------------------

    def accept_to_labels(self, mask_id: str, project, label: int,
                         author: str | None = None) -> EditResult:
        """Paint the mask into ``project``'s labels as class ``label`` (0 erases), as an edit
        by ``author``; the mask is then forgotten. ``project`` is an
        :class:`ilastik_web.project.Project`.
        """
        mask = self.masks.get(mask_id)
        if tuple(project.source.base.shape) != tuple(mask.volume_shape):
            raise InvalidRequestError(
                f"the mask was made on a volume of shape {mask.volume_shape}, the project's "
                f"source has shape {project.source.base.shape}"
            )
        result = project.paint_mask(mask.box, mask.mask, label, author=author)
        self.masks.pop(mask_id)
        return result

    def accept_to_instances(self, mask_id: str, store, author: str | None = None) -> int:
        """Add the mask as a new object of an :class:`~ilastik_web.sam.instances.InstanceStore`
        (by ``author``: undoable in their history)."""
        mask = self.masks.get(mask_id)
        if tuple(store.shape) != tuple(mask.volume_shape):
            raise InvalidRequestError("the instance layer belongs to a volume of another shape")
        object_id = store.add(mask.box, mask.mask, author=author)
        self.masks.pop(mask_id)
        return object_id

    def reject(self, mask_id: str) -> None:
        self.masks.pop(mask_id)

    def status(self) -> dict[str, Any]:
        stats = self.embeddings.stats
        return {
            "models": self.models.describe(),
            "active_prompts": self.prompt_limit.active,
            "max_active_prompts": self.prompt_limit.limit,
            "pending_tasks": sum(not t.is_finished for t in self.tasks.list()),
            "max_pending_tasks": self.tasks.max_pending,
            "embeddings": {"computed": stats.computed, "disk_hits": stats.disk_hits,
                           "memory_hits": stats.memory_hits,
                           "memory_bytes": stats.memory_bytes},
            "masks_waiting": len(self.masks),
        }


def _expand(mask2d: np.ndarray, ref: SliceRef) -> np.ndarray:
    """A 2D slice mask as the (z, y, x) array of its one-voxel-thick box."""
    return np.expand_dims(mask2d, axis=ref.normal)
