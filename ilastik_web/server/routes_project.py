"""Project routes: classes, strokes, undo/redo, feature selection, training, live events.

Coordinates in this API are voxel coordinates of the source's full resolution, in the
viewer's x, y, z order (fields say so: ``points_xyz``). Handlers only parse and call the
:class:`~ilastik_web.project.Project` API in the worker pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

import filters
from ilastik_web.abc import Box
from ilastik_web.classify.prediction import probabilities_at
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels import EditResult, Stroke
from ilastik_web.labels.rasterize import MAX_POINTS, MAX_RADIUS, PLANES, check_label
from ilastik_web.server.auth import Access, principal_of, still_allowed
from ilastik_web.server.projects import ProjectHub, ServedProject
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.server.urls import base_url
from ilastik_web.server.viewer_state import precomputed_path
from neuroglancer_ext import precomputed

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Largest stroke body: MAX_POINTS points with room to spare.
STROKE_MAX_BYTES = 2 * 1024 * 1024
#: Seconds between checks that an idle event stream's caller is still allowed in.
RECHECK_S = 2.0
_PROJECT = Param("project_id", description="Project id, as listed by /api/projects")
_CLASS = Param("value", description="Class value (1..255)", schema={"type": "integer"})


_COLOR = {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}
_POINT = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
STROKE_SCHEMA = {
    "type": "object", "required": ["points_xyz", "radius", "label"],
    "properties": {
        "points_xyz": {"type": "array", "items": _POINT, "minItems": 1,
                       "maxItems": MAX_POINTS},
        "radius": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_RADIUS},
        "label": {"type": "integer", "minimum": 0, "maximum": 255},
        "plane": {"enum": list(PLANES)},
    },
}
_CLASS_SCHEMA = {"type": "object", "required": ["name"],
                 "properties": {"name": {"type": "string", "minLength": 1}, "color": _COLOR}}
_CLASS_UPDATE_SCHEMA = {"type": "object",
                        "properties": {"name": {"type": "string"}, "color": _COLOR}}
_SELECTION_SCHEMA = {
    "type": "object", "required": ["selection"],
    "properties": {"selection": {"type": "array", "items": {
        "type": "array", "minItems": 2, "maxItems": 3,
        "prefixItems": [{"enum": list(filters.FEATURE_IDS)}, {"type": "number"},
                        {"type": "boolean"}]}}},
}
_CHANNELS_SCHEMA = {
    "type": "object", "required": ["channels"],
    "properties": {"channels": {"oneOf": [
        {"type": "null"},
        {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}]}},
}
_LIVE_SCHEMA = {"type": "object", "required": ["enabled"],
                "properties": {"enabled": {"type": "boolean"}}}


def _edit_json(result: EditResult | None) -> dict[str, Any]:
    if result is None:
        return {"changed": False}
    # A project's undo and redo may act on its instance objects (target "instances").
    target = "labels" if isinstance(result, EditResult) else "instances"
    return {"changed": True, "revision": result.revision, "target": target,
            "box_xyz": [list(result.box.start[::-1]), list(result.box.stop[::-1])]}


def stroke_from_json(body: Any) -> Stroke:
    """A :class:`Stroke` from ``{"points_xyz", "radius", "label", "plane"}``."""
    if not isinstance(body, dict):
        raise InvalidRequestError("a stroke must be a JSON object")
    points = body.get("points_xyz")
    if isinstance(points, list) and len(points) > MAX_POINTS:
        raise InvalidRequestError(f"a stroke has at most {MAX_POINTS} points")
    if not isinstance(points, list) or not all(
        isinstance(p, list) and len(p) == 3 and all(isinstance(c, int | float) for c in p)
        for p in points
    ):
        raise InvalidRequestError("points_xyz must be a list of [x, y, z] numbers")
    for key in ("radius", "label"):
        if not isinstance(body.get(key), int | float) or isinstance(body.get(key), bool):
            raise InvalidRequestError(f"{key} must be a number")
    return Stroke(
        points=tuple((p[2], p[1], p[0]) for p in points),
        radius=body["radius"],
        label=check_label(body["label"]),
        plane=body.get("plane", "xy"),
    )


def selection_from_json(body: Any) -> list[tuple]:
    items = body.get("selection") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise InvalidRequestError('expected {"selection": [[feature_id, sigma, in_2d?], ...]}')
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise InvalidRequestError(f"selection item {item!r} is not [feature_id, sigma, in_2d?]")
        out.append(tuple(item))
    try:
        filters.normalize_selection(out)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    return out


def describe_project(served: ServedProject, base: str) -> dict[str, Any]:
    project = served.project
    layers = {}
    for role, layer_id in served.layer_ids().items():
        if role == "raw":
            layers[role] = {"id": layer_id}
            continue
        layer = (served.label_layer if role == "labels" else served.prediction_layers[role])
        url = base + precomputed_path(layer.layer_id, layer.version)
        layers[role] = {"id": layer.layer_id, "version": layer.version, "precomputed": url}
    return {
        "id": served.project_id,
        "uid": project.uid,
        "source": project.source_location,
        "shape_xyz": list(project.source.base.shape[::-1]),
        "classes": [c.to_json() for c in project.classes],
        "features": [[s.feature_id, s.sigma, s.in_2d] for s in project.selection],
        "feature_channels": list(project.feature_channels),
        "generation": project.generation,
        "label_revision": project.labels.revision,
        "can_undo": project.labels.can_undo,
        "can_redo": project.labels.can_redo,
        # Log records skipped as unreadable when the project was opened (normally none).
        "label_problems": list(project.labels.problems),
        "training": project.training_status.to_json(),
        "live_updates": project.live_updates,
        "layers": layers,
    }


def project_routes(hub: ProjectHub, executor: Executor,
                   access: Access | None = None) -> list[Route]:
    """Routes over the projects in ``hub``; blocking work runs in ``executor``.

    With ``access``, listings show only the projects the caller has a role on, and each
    project says which role that is.
    """

    def role_of(request: web.Request, project_id: str) -> str | None:
        return "owner" if access is None else access.role_on(principal_of(request), project_id)

    def describe(request: web.Request, served: ServedProject) -> dict[str, Any]:
        author = principal_of(request).id
        return {**describe_project(served, base_url(request)),
                "role": role_of(request, served.project_id),
                "can_undo": served.project.can_undo_by(author),
                "can_redo": served.project.can_redo_by(author)}

    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    def served_of(request: web.Request) -> ServedProject:
        return hub.get(request.match_info["project_id"])

    def class_value(request: web.Request) -> int:
        try:
            return int(request.match_info["value"])
        except ValueError:
            raise InvalidRequestError("class value must be an integer") from None

    async def list_projects(request: web.Request) -> web.Response:
        return web.json_response({"projects": [describe(request, s) for s in hub.list()
                                               if role_of(request, s.project_id)]})

    async def get_project(request: web.Request) -> web.Response:
        return web.json_response(describe(request, served_of(request)))

    async def add_class(request: web.Request) -> web.Response:
        project = served_of(request).project
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise InvalidRequestError('expected {"name": "...", "color": "#rrggbb"?}')
        color = body.get("color")
        if color is not None and not isinstance(color, str):
            raise InvalidRequestError("color must be a string like #rrggbb")
        created = await run(lambda: project.add_class(body["name"], color))
        return web.json_response(created.to_json(), status=201)

    async def update_class(request: web.Request) -> web.Response:
        project = served_of(request).project
        value = class_value(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidRequestError('expected {"name"?: "...", "color"?: "#rrggbb"}')
        name, color = body.get("name"), body.get("color")
        if (name is not None and not isinstance(name, str)) or (
            color is not None and not isinstance(color, str)
        ):
            raise InvalidRequestError("name and color must be strings")
        updated = await run(lambda: project.update_class(value, name=name, color=color))
        return web.json_response(updated.to_json())

    async def delete_class(request: web.Request) -> web.Response:
        project = served_of(request).project
        value = class_value(request)
        author = principal_of(request).id
        await run(lambda: project.remove_class(value, author=author))
        return web.json_response({"deleted": value})

    async def paint(request: web.Request) -> web.Response:
        project = served_of(request).project
        body = await read_json(request, max_bytes=STROKE_MAX_BYTES)
        author = principal_of(request).id
        limited = access is not None and access.limited(principal_of(request))

        def paint_stroke() -> EditResult:
            # Parsed and rasterised in the pool, and answered only after the edit is
            # fsync'd: an acknowledged stroke survives a crash.
            stroke = stroke_from_json(body)
            if limited:
                access.limits.check_stroke(len(stroke.points), stroke.radius, stroke.plane)
            return project.paint(stroke, author=author)

        result = await run(paint_stroke)
        return web.json_response(_edit_json(result))

    async def undo(request: web.Request) -> web.Response:
        project = served_of(request).project
        author = principal_of(request).id
        return web.json_response(_edit_json(await run(lambda: project.undo(author))))

    async def redo(request: web.Request) -> web.Response:
        project = served_of(request).project
        author = principal_of(request).id
        return web.json_response(_edit_json(await run(lambda: project.redo(author))))

    async def get_features(request: web.Request) -> web.Response:
        project = served_of(request).project
        return web.json_response({
            "selection": [[s.feature_id, s.sigma, s.in_2d] for s in project.selection],
            "feature_ids": list(filters.FEATURE_IDS),
            "scales": list(filters.DEFAULT_SCALES),
            "channels": list(project.feature_channels),
            "num_channels": project.source.base.num_channels,
        })

    async def set_feature_channels(request: web.Request) -> web.Response:
        project = served_of(request).project
        body = await read_json(request)
        if not isinstance(body, dict) or "channels" not in body:
            raise InvalidRequestError('expected {"channels": [channel index, ...] or null}')
        channels = body["channels"]
        if channels is not None and not (isinstance(channels, list) and all(
                isinstance(c, int) and not isinstance(c, bool) for c in channels)):
            raise InvalidRequestError("channels must be a list of channel indices or null")
        await run(lambda: project.set_feature_channels(channels))
        return await get_features(request)

    async def set_features(request: web.Request) -> web.Response:
        project = served_of(request).project
        selection = selection_from_json(await read_json(request))
        await run(lambda: project.set_selection(selection))
        return await get_features(request)

    async def probabilities_here(request: web.Request) -> web.Response:
        project = served_of(request).project
        point_zyx = []
        for axis in ("z", "y", "x"):
            try:
                point_zyx.append(int(request.query[axis]))
            except (KeyError, ValueError):
                raise InvalidRequestError(f"give the voxel as integers x, y and z (?x=..&y=..&"
                                          f"z=..); {axis} is missing or not an integer") from None

        def read() -> dict:
            current = project.current_generation()
            volume = current.pyramids["probabilities"].levels[0]
            # The viewer's chunks that hold the voxel: after it drew them, they are cached.
            around = []
            for size_xyz in precomputed.chunk_sizes(volume, flat_2d=volume.shape[0] == 1):
                size = size_xyz[::-1]
                start = [p // s * s for p, s in zip(point_zyx, size, strict=True)]
                stop = [min(a + s, n) for a, s, n in zip(start, size, volume.shape, strict=True)]
                around.append(Box(start, stop))
            values = probabilities_at(volume, point_zyx, around)
            classes = {c.value: c for c in project.classes}
            rows = []
            for value, byte in zip(current.classifier.label_values, values.tolist(), strict=True):
                cls = classes.get(int(value))
                rows.append({"value": int(value), "name": cls.name if cls else f"class {value}",
                             "color": cls.color if cls else None,
                             "probability": round(byte / 255.0, 4)})
            return {"generation": current.number, "position_xyz": point_zyx[::-1],
                    "classes": rows}

        return web.json_response(await run(read))

    async def importance(request: web.Request) -> web.Response:
        project = served_of(request).project

        def of_one_generation() -> dict:  # the number and the values of the same classifier
            current = project.current_generation()
            return {"generation": current.number,
                    "importance": current.classifier.feature_importances()}

        return web.json_response(await run(of_one_generation))

    async def train(request: web.Request) -> web.Response:
        project = served_of(request).project
        generation = await run(project.train)
        return web.json_response({"generation": generation})

    async def set_live(request: web.Request) -> web.Response:
        project = served_of(request).project
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
            raise InvalidRequestError('expected {"enabled": true|false}')
        await run(lambda: project.set_live_updates(body["enabled"]))
        return web.json_response({"live_updates": project.live_updates})

    async def events(request: web.Request) -> web.WebSocketResponse:
        """Push project events as JSON: {"kind": ..., "payload": ...}."""
        served = served_of(request)
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=1000)

        def push(kind: str, payload: dict) -> None:
            def put() -> None:
                if queue.full():  # a stalled client drops old events, never blocks us
                    queue.get_nowait()
                queue.put_nowait({"kind": kind, "payload": payload})

            loop.call_soon_threadsafe(put)

        unsubscribe = served.project.subscribe(push)
        await ws.send_json({"kind": "hello",
                            "payload": describe(request, served)})
        principal = principal_of(request)
        stop_presence = served.presence.subscribe(
            lambda people: push("presence", {"people": people}))
        push("presence", {"people": served.presence.people()})
        served.presence.join(principal.id, principal.name,
                             role_of(request, served.project_id))

        async def forward() -> None:
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=RECHECK_S)
                except TimeoutError:
                    message = None
                if not still_allowed(request):  # a revoked link, an ended session
                    await ws.close(code=4403, message=b"access revoked")
                    return
                if message is not None:
                    await ws.send_str(json.dumps(message))

        sender = asyncio.create_task(forward())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            unsubscribe()
            stop_presence()
            served.presence.leave(principal.id)
        return ws

    tags = ("projects",)
    p = (_PROJECT,)
    edit = {200: "The new label revision (or changed=false)", 404: "No such project"}
    return [
        Route("GET", "/api/projects", list_projects, name="list_projects", tags=tags,
              role="user",
              summary="Open projects with classes, features, generation and layer URLs"),
        Route("GET", "/api/projects/{project_id}", get_project, name="get_project", tags=tags,
              summary="One project", parameters=p, responses={200: "The project", 404: "None"}),
        Route("POST", "/api/projects/{project_id}/classes", add_class, name="add_class",
              summary="Add a label class", role="owner", parameters=p, tags=tags,
              request_body='{"name": str, "color": "#rrggbb" (optional)}',
              body_schema=_CLASS_SCHEMA,
              responses={201: "The new class", 400: "Bad name or colour"}),
        Route("PATCH", "/api/projects/{project_id}/classes/{value}", update_class,
              name="update_class", summary="Rename or recolour a class", role="owner",
              parameters=(*p, _CLASS), tags=tags, request_body='{"name"?: str, "color"?: str}',
              body_schema=_CLASS_UPDATE_SCHEMA,
              responses={200: "The class", 404: "No such class"}),
        Route("DELETE", "/api/projects/{project_id}/classes/{value}", delete_class,
              name="delete_class", summary="Delete a class and erase its labels (undoable)",
              role="owner", parameters=(*p, _CLASS), tags=tags,
              responses={200: "Deleted", 404: "No such class"}),
        Route("POST", "/api/projects/{project_id}/strokes", paint, name="paint",
              summary="Paint a stroke; answered once it is durable", role="annotator",
              parameters=p, tags=tags, responses={**edit, 400: "Malformed stroke"},
              request_body='{"points_xyz": [[x, y, z], ...], "radius": voxels, '
                           '"label": class value or 0 to erase, "plane": "xy"|"xz"|"yz"|"3d"}',
              body_schema=STROKE_SCHEMA),
        Route("POST", "/api/projects/{project_id}/undo", undo, name="undo", tags=tags,
              summary="Undo the latest label edit", role="annotator", parameters=p,
              responses=edit),
        Route("POST", "/api/projects/{project_id}/redo", redo, name="redo", tags=tags,
              summary="Redo the latest undone label edit", role="annotator", parameters=p,
              responses=edit),
        Route("GET", "/api/projects/{project_id}/features", get_features, name="get_features",
              summary="The feature selection and the available features and scales",
              parameters=p, tags=tags),
        Route("PUT", "/api/projects/{project_id}/features", set_features, name="set_features",
              summary="Replace the feature selection (retrains)", role="owner",
              parameters=p, tags=tags,
              request_body='{"selection": [[feature_id, sigma, in_2d (optional)], ...]}',
              body_schema=_SELECTION_SCHEMA,
              responses={200: "The new selection", 400: "Unknown feature or bad sigma"}),
        Route("PUT", "/api/projects/{project_id}/feature_channels", set_feature_channels,
              name="set_feature_channels",
              summary="Choose the input channels that feed the features (retrains; batch "
                      "exports use them too)", role="owner", parameters=p, tags=tags,
              request_body='{"channels": [channel index, ...] or null for all}',
              body_schema=_CHANNELS_SCHEMA,
              responses={200: "The feature selection and channels",
                         400: "Empty, repeated or unknown channel"}),
        Route("GET", "/api/projects/{project_id}/probabilities", probabilities_here,
              name="probabilities_at", tags=tags, parameters=(
                  *p, *(Param(a, location="query", schema={"type": "integer", "minimum": 0},
                              description=f"Voxel {a} (full resolution)")
                        for a in ("x", "y", "z"))),
              summary="Class probabilities at one voxel, named by class, as the viewer "
                      "shows them (the value readout under the mouse)",
              responses={200: "Probability per class", 400: "Outside the volume",
                         503: "No classifier yet"}),
        Route("GET", "/api/projects/{project_id}/importance", importance, name="importance",
              summary="Feature importance of the current classifier, per channel",
              parameters=p, tags=tags, responses={200: "Importances", 503: "No classifier"}),
        Route("POST", "/api/projects/{project_id}/train", train, name="train", tags=tags,
              summary="Train now and wait for the new generation", role="annotator",
              parameters=p, responses={200: "The new generation", 400: "Too few classes"}),
        Route("PUT", "/api/projects/{project_id}/live", set_live, name="set_live", tags=tags,
              summary="Pause or resume live retraining after each change", role="owner",
              parameters=p, request_body='{"enabled": bool}', body_schema=_LIVE_SCHEMA,
              responses={200: "The new setting", 400: "Malformed body"}),
        Route("GET", "/api/projects/{project_id}/events", events, name="project_events",
              summary="WebSocket of project events (labels, classes, features, generation, "
                      "training status, presence: who is on the project)", parameters=p, tags=tags,
              responses={101: "Switching to WebSocket"}),
    ]
