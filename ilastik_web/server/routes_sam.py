"""SAM routes: click an object, preview its mask, accept it into labels or instance objects,
and carry it through neighbouring slices.

Coordinates are continuous voxel coordinates of the source's full resolution in the
viewer's x, y, z order (voxel ``i`` spans ``[i, i + 1)``; Neuroglancer reports centres
``i + 0.5``). Planes are "xy", "xz" and "yz"; a slice is the floor of the normal
coordinate. The data a prompt works on is named by ``layer_id`` (any served image layer)
or ``project_id`` (that project's raw source).

The viewer's loop: ``POST /api/sam/prompt`` → a preview (``mask_id``, score, per-slice
bounding box, run lengths and polygons) → refine with more points and
``previous_mask_id`` → ``POST /api/sam/masks/{id}/accept`` (labels of a class, or a new
object of the instance layer) or ``DELETE /api/sam/masks/{id}``. For 3D:
``POST /api/sam/masks/{id}/propagate`` → task → poll ``GET /api/sam/tasks/{task_id}``
(progress) → its result's ``mask_id`` is a 3D preview, accepted or rejected the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import InvalidRequestError, TooManyRequestsError
from ilastik_web.sam.automatic import AutoParams
from ilastik_web.sam.finetune import settings_from_json
from ilastik_web.sam.geometry import check_plane, in_plane_axes, slice_index_of
from ilastik_web.sam.service import SamService
from ilastik_web.server.auth import Access, principal_of
from ilastik_web.server.instance_layer import InstanceLayers
from ilastik_web.server.layers import LayerRegistry
from ilastik_web.server.limits import no_limit
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.server.urls import base_url
from ilastik_web.server.viewer_state import precomputed_path
from ilastik_web.sources.location import check_allowed

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a client should wait before retrying a 429.
RETRY_AFTER_S = 1


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{name} must be a number")
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InvalidRequestError(f"{name} must be an integer")
    return int(value)


def _points(value: Any, name: str) -> list[list[float]]:
    if not isinstance(value, list) or not all(
        isinstance(p, list) and len(p) == 3 and all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in p)
        for p in value
    ):
        raise InvalidRequestError(f"{name} must be a list of [x, y, z] numbers")
    return value


def sam_routes(service: SamService, registry: LayerRegistry, hub: ProjectHub | None = None,
               *, cache: ArrayCache | None = None,
               instances_dir: Path | None = None,
               access: Access | None = None,
               allowed_roots: Sequence[Path] | None = None,
               instances: InstanceLayers | None = None) -> list[Route]:
    """Routes of the SAM prompt service.

    Parameters
    ----------
    service
        Owns the models, embeddings, waiting masks and tasks (and its own threads, so
        slow embeddings never hold up chunk serving).
    registry
        Served layers: prompts may address any image layer; instance layers are added.
    hub
        Open projects (for ``project_id`` and accepting into labels); None: none.
    cache
        For the instance layers' coarser levels.
    instances_dir
        Where instance objects persist (a folder per source); None: in memory.
    access
        The access rules: a ``project_id`` named in a body needs the annotator role on
        that project (the route's own role is checked by the access middleware).
    allowed_roots
        Fine-tuning reads training sets and writes checkpoints only under these.
    instances
        The instance layers (shared with the instance tools' routes); None: made here.
    """
    if instances is None:
        instances = InstanceLayers(registry, cache or ArrayCache(64 << 20), instances_dir, hub)

    async def run_prompt(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(service.prompt_executor, fn)

    async def run_quick(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    def too_many(exc: TooManyRequestsError) -> web.HTTPTooManyRequests:
        return web.HTTPTooManyRequests(text=str(exc), headers={"Retry-After": str(RETRY_AFTER_S)})

    def resolve_volume(body: dict) -> tuple[str, LazyVolume]:
        layer_id, project_id = body.get("layer_id"), body.get("project_id")
        if (layer_id is None) == (project_id is None):
            raise InvalidRequestError("give exactly one of layer_id and project_id")
        if project_id is not None:
            if hub is None or not isinstance(project_id, str):
                raise InvalidRequestError("no projects are served here")
            return f"project:{project_id}", hub.get(project_id).project.source.base
        if not isinstance(layer_id, str):
            raise InvalidRequestError("layer_id must be a string")
        layer = registry.get(layer_id)
        if layer.kind != "image":
            raise InvalidRequestError(f"layer {layer_id!r} is a {layer.kind} layer, not an image")
        # A version names one of the data a layer serves (an image collection's items).
        version = body.get("version")
        if version is None:
            return f"layer:{layer_id}", layer.volume(layer.version).base
        if not isinstance(version, str):
            raise InvalidRequestError("version must be a string")
        return f"layer:{layer_id}@{version}", layer.volume(version).base

    def volume_of_source(source: str) -> LazyVolume:
        kind, _, name = source.partition(":")
        if kind != "project" and "@" in name:
            name, _, version = name.partition("@")
            return resolve_volume({"layer_id": name, "version": version})[1]
        return resolve_volume({"project_id" if kind == "project" else "layer_id": name})[1]

    async def body_of(request: web.Request) -> dict:
        body = await read_json(request, max_bytes=1 << 20)
        if not isinstance(body, dict):
            raise InvalidRequestError("expected a JSON object")
        if access is not None and isinstance(body.get("project_id"), str):
            access.require(principal_of(request), "annotator", body["project_id"])
        return body

    def model_of(body: dict) -> str | None:
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequestError("model must be a model name")
        return model

    def admit_task(request: web.Request) -> None:
        principal = principal_of(request)
        if access is not None and access.limited(principal):
            access.limits.admit_task(principal.id)

    def task_started(request: web.Request, task) -> None:
        principal = principal_of(request)
        if access is not None and access.limited(principal):
            access.limits.task_started(principal.id, task)

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response({"models": service.models.describe()})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(service.status())

    async def prompt(request: web.Request) -> web.Response:
        body = await body_of(request)
        source, volume = resolve_volume(body)
        plane = check_plane(body.get("plane", "xy"))
        points = _points(body.get("points_xyz", []), "points_xyz")
        labels = body.get("point_labels", [1] * len(points))
        if not isinstance(labels, list):
            raise InvalidRequestError("point_labels must be a list of 1 and 0")
        labels = [_integer(v, "point_labels") for v in labels]
        box = body.get("box_xyz")
        if box is not None:
            box = _points(box, "box_xyz")
        if "index" in body:
            index = _integer(body["index"], "index")
        else:
            index = slice_index_of(points or (box or []), plane)
        previous = body.get("previous_mask_id")
        if previous is not None and not isinstance(previous, str):
            raise InvalidRequestError("previous_mask_id must be a string")
        multimask = body.get("multimask")
        if multimask is not None and not isinstance(multimask, bool):
            raise InvalidRequestError("multimask must be true or false")
        model = model_of(body)
        try:
            admission = service.admit_prompt()
        except TooManyRequestsError as exc:
            raise too_many(exc) from None
        principal = principal_of(request)
        share = (access.limits.sam_slot(principal.id)
                 if access is not None and access.limited(principal) else no_limit())
        with admission, share:
            mask = await run_prompt(lambda: service.prompt(
                volume, source, plane, index, points_xyz=points, point_labels=labels,
                box_xyz=box, previous_mask_id=previous, model=model, multimask=multimask,
            ))
            payload = await run_quick(mask.to_json)
        return web.json_response(payload)

    async def get_mask(request: web.Request) -> web.Response:
        mask = service.masks.get(request.match_info["mask_id"])
        return web.json_response(await run_quick(mask.to_json))

    async def reject(request: web.Request) -> web.Response:
        service.reject(request.match_info["mask_id"])
        return web.json_response({"rejected": request.match_info["mask_id"]})

    async def accept(request: web.Request) -> web.Response:
        mask_id = request.match_info["mask_id"]
        body = await body_of(request)
        mask = service.masks.get(mask_id)
        target = body.get("target", "labels")
        if target == "labels":
            project_id = body.get("project_id")
            if project_id is None and mask.source.startswith("project:"):
                project_id = mask.source.partition(":")[2]
            if hub is None or not isinstance(project_id, str):
                raise InvalidRequestError("accepting into labels needs a project_id")
            if access is not None:
                access.require(principal_of(request), "annotator", project_id)
            project = hub.get(project_id).project
            label = _integer(body.get("label"), "label")
            author = principal_of(request).id
            result = await run_quick(lambda: service.accept_to_labels(mask_id, project, label,
                                                                      author=author))
            return web.json_response({
                "target": "labels", "project_id": project_id, "revision": result.revision,
                "box_xyz": [list(result.box.start[::-1]), list(result.box.stop[::-1])],
            })
        if target == "instances":
            volume = volume_of_source(mask.source)
            layer = instances.layer_for(mask.source, volume)
            author = principal_of(request).id
            object_id = await run_quick(lambda: service.accept_to_instances(
                mask_id, layer.store, author=author))
            url = base_url(request) + precomputed_path(layer.layer_id, layer.version)
            return web.json_response({"target": "instances", "object_id": object_id,
                                      "layer_id": layer.layer_id, "version": layer.version,
                                      "precomputed": url})
        raise InvalidRequestError('target must be "labels" or "instances"')

    async def delete_object(request: web.Request) -> web.Response:
        layer = instances.get(request.match_info["layer_id"])
        object_id = _integer_text(request.match_info["object_id"], "object id")
        author = principal_of(request).id
        await run_quick(lambda: layer.store.remove(object_id, author=author))
        return web.json_response({"deleted": object_id, "version": layer.version})

    async def propagate(request: web.Request) -> web.Response:
        mask_id = request.match_info["mask_id"]
        body = await body_of(request)
        mask = service.masks.get(mask_id)
        volume = volume_of_source(mask.source)
        start = mask.box.start[{"xy": 0, "xz": 1, "yz": 2}[mask.plane]]
        lower = _integer(body.get("lower", start - 10), "lower")
        upper = _integer(body.get("upper", start + 10), "upper")
        projection = body.get("projection", "mask")
        threshold = _number(body.get("iou_threshold", 0.8), "iou_threshold")
        try:
            admit_task(request)
            task = service.propagate(volume, mask_id, lower=lower, upper=upper,
                                     iou_threshold=threshold, projection=projection,
                                     model=model_of(body))
        except TooManyRequestsError as exc:
            raise too_many(exc) from None
        task_started(request, task)
        return web.json_response(task.to_json(), status=202)

    async def precompute(request: web.Request) -> web.Response:
        body = await body_of(request)
        source, volume = resolve_volume(body)
        plane = check_plane(body.get("plane", "xy"))
        start = _integer(body.get("start"), "start")
        stop = _integer(body.get("stop", start + 1), "stop")
        try:
            admit_task(request)
            task = service.precompute(volume, source, plane, start, stop, model_of(body))
        except TooManyRequestsError as exc:
            raise too_many(exc) from None
        task_started(request, task)
        return web.json_response(task.to_json(), status=202)

    async def automatic(request: web.Request) -> web.Response:
        body = await body_of(request)
        source, volume = resolve_volume(body)
        plane = check_plane(body.get("plane", "xy"))
        index = _integer(body.get("index"), "index")
        depth = _integer(body.get("depth", 1), "depth")
        region = None
        if body.get("region_xyz") is not None:
            (x0, y0, z0), (x1, y1, z1) = _points(body["region_xyz"], "region_xyz")[:2]
            start, stop = (z0, y0, x0), (z1, y1, x1)
            rows, cols = in_plane_axes(plane)
            region = Box((int(start[rows]), int(start[cols])),
                         (int(-(-stop[rows] // 1)), int(-(-stop[cols] // 1))))
        params = AutoParams.from_json(body.get("params", {}))
        layer = instances.layer_for(source, volume)
        author = principal_of(request).id

        def sink(objects) -> list[int]:
            return [layer.store.add(box, mask, author=author) for box, mask in objects]

        try:
            task = service.segment_automatic(volume, source, plane, index, depth=depth,
                                             region=region, params=params,
                                             model=model_of(body), sink=sink)
        except TooManyRequestsError as exc:
            raise too_many(exc) from None
        payload = task.to_json()
        payload["layer_id"] = layer.layer_id
        return web.json_response(payload, status=202)

    async def finetune(request: web.Request) -> web.Response:
        body = await body_of(request)
        paths = {}
        for key in ("training_set", "output"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise InvalidRequestError(f"{key} must be a path on the server")
            paths[key] = Path(body[key])
            check_allowed(paths[key], allowed_roots, body[key])
        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidRequestError("name (of the new model) must be a string")
        settings = settings_from_json(body.get("settings", {}))
        try:
            task = service.finetune(paths["training_set"], paths["output"], name=name,
                                    settings=settings, model=model_of(body))
        except TooManyRequestsError as exc:
            raise too_many(exc) from None
        return web.json_response(task.to_json(), status=202)

    async def get_task(request: web.Request) -> web.Response:
        return web.json_response(service.tasks.get(request.match_info["task_id"]).to_json())

    async def cancel_task(request: web.Request) -> web.Response:
        return web.json_response(service.tasks.cancel(request.match_info["task_id"]).to_json())

    tags = ("sam",)
    mask_p = (Param("mask_id", description="A mask id from a prompt or propagation"),)
    task_p = (Param("task_id", description="A task id from precompute or propagate"),)
    busy = {429: "Too many prompts or tasks in progress (Retry-After)"}
    return [
        Route("GET", "/api/sam/models", list_models, name="sam_models", tags=tags,
              summary="Configured SAM models: checkpoint, available (file exists), loaded, "
                      "device"),
        Route("GET", "/api/sam/status", status, name="sam_status", tags=tags,
              summary="Prompt and task queue use, embedding cache figures"),
        Route("POST", "/api/sam/prompt", prompt, name="sam_prompt", tags=tags,
              role="annotator",
              summary="Segment from a click: points (1 positive, 0 negative), a box and/or "
                      "the previous mask on one slice -> a preview mask_id, score, and per "
                      "slice box_xyz, run lengths (over the box, C order of the slice image "
                      "axes: xy (y, x), xz (z, x), yz (z, y), starting with a 0-run) and "
                      "polygons_xyz (rings through pixel-edge midpoints, even-odd fill)",
              request_body='{"layer_id" (and "version"?) | "project_id", '
                           '"plane": "xy"|"xz"|"yz", '
                           '"points_xyz"?: [[x, y, z]], "point_labels"?: [1|0], '
                           '"box_xyz"?: [[x0, y0, z0], [x1, y1, z1]], "index"?: slice '
                           '(default: floor of the first point\'s normal coordinate), '
                           '"previous_mask_id"?, "model"?, "multimask"?: bool}',
              responses={200: "The preview mask", 400: "Malformed prompt",
                         404: "No such layer, project, model or previous mask",
                         503: "Model checkpoint missing", **busy}),
        Route("GET", "/api/sam/masks/{mask_id}", get_mask, name="sam_mask", tags=tags,
              parameters=mask_p, summary="A preview mask again (2D prompt or 3D propagation "
                                         "result), per slice",
              responses={200: "The mask", 404: "Unknown, accepted, rejected or expired"}),
        Route("DELETE", "/api/sam/masks/{mask_id}", reject, name="sam_reject", tags=tags,
              parameters=mask_p, role="annotator", summary="Reject (forget) a preview mask",
              responses={200: "Rejected", 404: "Unknown mask"}),
        Route("POST", "/api/sam/masks/{mask_id}/accept", accept, name="sam_accept", tags=tags,
              parameters=mask_p, role="annotator",
              summary="Accept a preview: paint it into a project's labels as a class "
                      "(undoable, trains the classifier) or add it as a new object of the "
                      "source's instance layer (<source>-sam-objects, a segmentation layer)",
              request_body='{"target": "labels", "project_id"?, "label": class value or 0} | '
                           '{"target": "instances"}',
              responses={200: "The label revision, or the object id and layer URL",
                         400: "Bad target or class", 404: "Unknown mask or project"}),
        Route("POST", "/api/sam/masks/{mask_id}/propagate", propagate, name="sam_propagate",
              tags=tags, parameters=mask_p, role="annotator",
              summary="Propagate a one-slice mask through neighbouring slices (a task); the "
                      "task's result.mask_id is the 3D preview",
              request_body='{"lower"?: slice, "upper"?: slice (default +-10), '
                           '"iou_threshold"?: 0.8, "projection"?: "mask"|"box"|"single_point"|'
                           '"point_and_mask", "model"?}',
              responses={202: "The queued task", 400: "Bad range", 404: "Unknown mask",
                         **busy}),
        Route("POST", "/api/sam/embeddings", precompute, name="sam_precompute", tags=tags,
              role="annotator",
              summary="Precompute the embeddings of slices start..stop-1 (a task)",
              request_body='{"layer_id" | "project_id", "plane", "start", "stop"?, "model"?}',
              responses={202: "The queued task", 400: "Bad range", **busy}),
        Route("POST", "/api/sam/automatic", automatic, name="sam_automatic", tags=tags,
              role="annotator",
              summary="Segment everything on a slice (or its region), or on a block of "
                      "depth slices, with micro-sam's AMG or AIS (a task); the objects found "
                      "are added to the source's instance layer (the task result's "
                      "object_ids)",
              request_body='{"layer_id" | "project_id", "plane"?: "xy"|"xz"|"yz", "index": '
                           'slice, "depth"?: 1, "region_xyz"?: [[x0, y0, z0], [x1, y1, z1]], '
                           '"model"?, "params"?: {"method"?: "auto"|"amg"|"ais", '
                           '"points_per_side"?, "pred_iou_thresh"?, "stability_score_thresh"?,'
                           ' "box_nms_thresh"?, "center_distance_threshold"?, '
                           '"boundary_distance_threshold"?, "foreground_threshold"?, '
                           '"min_size"?}}',
              responses={202: "The queued task and the instance layer_id",
                         400: "Bad slice, region or parameters",
                         404: "No such layer, project or model", **busy}),
        Route("POST", "/api/sam/finetune", finetune, name="sam_finetune", tags=tags,
              role="admin",
              summary="Fine-tune a model on a tiff-layout training set with micro-sam's "
                      "trainer (a task: progress, cancel); when done the checkpoint is "
                      "offered as the new model `name`",
              request_body='{"training_set": dir, "output": "new.pt", "name": new model, '
                           '"model"?: base, "settings"?: {"iterations", "patch", '
                           '"batch_size", "lr", "n_objects_per_batch", "n_sub_iteration"}}',
              responses={202: "The queued task", 400: "Bad paths, name or settings",
                         403: "A path outside the allowed roots", **busy}),
        Route("GET", "/api/sam/tasks/{task_id}", get_task, name="sam_task", tags=tags,
              parameters=task_p,
              summary="A task: state (queued, running, done, failed, cancelled), progress "
                      "0..1, message, result",
              responses={200: "The task", 404: "Unknown task"}),
        Route("DELETE", "/api/sam/tasks/{task_id}", cancel_task, name="sam_cancel_task",
              tags=tags, parameters=task_p, role="annotator", summary="Cancel a task",
              responses={200: "The task", 404: "Unknown task"}),
        Route("DELETE", "/api/sam/objects/{layer_id}/{object_id}", delete_object,
              name="sam_delete_object", tags=tags, role="annotator",
              parameters=(Param("layer_id", description="An instance layer id"),
                          Param("object_id", description="Object id",
                                schema={"type": "integer"})),
              summary="Remove one object from an instance layer",
              responses={200: "Removed; the layer's new version", 404: "Unknown object"}),
    ]


def _integer_text(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRequestError(f"{name} must be an integer") from None
