"""Instance tools' routes: polygon, cutter, object brush and eraser, merge, delete, undo.

An instance layer is named by its ``layer_id``: ``project-<id>-sam-objects`` for a
project (made on first use; its edits join the project's undo history, so
``POST .../undo`` undoes the caller's latest edit, label or instance), or
``layer-<id>-sam-objects`` for a plain image layer (its own history). ``POST
/api/instances/layers`` makes one and says where it is served. A served collection's
``collection-objects`` layer is one too, for the item its ``?version=`` names (see
:mod:`ilastik_web.server.collection_instances`): edits are written through to the item's
annotation, new objects get the class ``"class"`` of the body (polygon, brush).

Coordinates are viewer points (x, y, z) in continuous voxel coordinates of the source's
full resolution, as for SAM (:mod:`ilastik_web.server.routes_sam`); the slice of a plane
is the floor of the first vertex's normal coordinate unless ``index`` is given. Every edit
answers ``{"changed", "object_id", "revision", "version", "precomputed", "box_xyz"}``
once it is durable.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

from aiohttp import web

from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.geometry import SliceRef, check_plane, slice_index_of
from ilastik_web.sam.instance_geometry import outline, polygon_mask, polyline_mask, split_region
from ilastik_web.sam.instances import InstanceEditResult
from ilastik_web.server.auth import Access, principal_of
from ilastik_web.server.collection_instances import ItemInstances
from ilastik_web.server.instance_layer import InstanceLayer, InstanceLayers
from ilastik_web.server.routes_project import stroke_from_json
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.server.urls import base_url
from ilastik_web.server.viewer_state import precomputed_path

T = TypeVar("T")
#: (version, user, is_edit) -> the layer the instance routes act on.
Resolver = Callable[[str | None, str, bool], Any]


def _object_id(value: Any, name: str = "object_id", *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{name} must be a positive integer object id")
    return value


def _vertices(body: dict, key: str = "vertices_xyz") -> list:
    value = body.get(key)
    if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 3
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
            for p in value):
        raise InvalidRequestError(f"{key} must be a list of [x, y, z] numbers")
    return value


def _slice_of(layer: InstanceLayer, body: dict, vertices: list) -> SliceRef:
    plane = check_plane(body.get("plane", "xy"))
    index = body.get("index")
    if index is None:
        index = slice_index_of(vertices, plane)
    elif isinstance(index, bool) or not isinstance(index, int):
        raise InvalidRequestError("index must be an integer slice")
    return SliceRef(layer.store.shape, plane, index)


def instance_routes(instances: InstanceLayers, executor: Executor,
                    access: Access | None = None,
                    targets: Mapping[str, Resolver] | None = None) -> list[Route]:
    """Routes of the instance tools over the layers of ``instances``; edits run in
    ``executor`` and are answered once logged.

    ``targets`` maps further layer ids to a resolver called with the request's
    ``?version=``, the caller's id and whether the request edits: the layer (an
    :class:`ItemInstances` for ``collection-objects``) the routes act on.
    """

    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    def layer_of(request: web.Request) -> InstanceLayer | ItemInstances:
        layer_id = request.match_info["layer_id"]
        resolve = (targets or {}).get(layer_id)
        if resolve is not None:
            return resolve(request.query.get("version"), principal_of(request).id,
                           request.method != "GET")
        return instances.get(layer_id)

    async def body_of(request: web.Request) -> dict:
        body = await read_json(request, max_bytes=4 << 20)
        if not isinstance(body, dict):
            raise InvalidRequestError("expected a JSON object")
        return body

    def describe(request: web.Request, layer: InstanceLayer) -> dict:
        author = principal_of(request).id
        history = layer.project if layer.project is not None else layer.store
        sources = layer.store.sources()
        return {"layer_id": layer.layer_id, "version": layer.version,
                "precomputed": base_url(request) + precomputed_path(layer.layer_id,
                                                                     layer.version),
                "project_id": (layer.layer_id.removeprefix("project-")
                               .removesuffix("-sam-objects") if layer.project else None),
                "objects": [{"id": i, "source": s,
                             "sources": layer.store.object_sources(i)}
                            for i, s in sources.items()],
                "can_undo": history.can_undo_by(author), "can_redo": history.can_redo_by(author),
                **(layer.describe() if isinstance(layer, ItemInstances) else {})}

    def answer(request: web.Request, layer: InstanceLayer, result) -> web.Response:
        if result is None:
            return web.json_response({"changed": False, "version": layer.version})
        out = {"changed": True, "target": "instances", "revision": result.revision,
               "version": layer.version,
               "precomputed": base_url(request) + precomputed_path(layer.layer_id,
                                                                    layer.version),
               "box_xyz": [list(result.box.start[::-1]), list(result.box.stop[::-1])]}
        if isinstance(result, InstanceEditResult):
            out["object_id"] = result.object_id
        else:
            out["target"] = "labels"
        return web.json_response(out)

    async def make_layer(request: web.Request) -> web.Response:
        body = await body_of(request)
        project_id, layer_id = body.get("project_id"), body.get("layer_id")
        if (project_id is None) == (layer_id is None) or not isinstance(
                project_id if project_id is not None else layer_id, str):
            raise InvalidRequestError("give exactly one of project_id and layer_id (strings)")
        if project_id is not None:
            if access is not None:
                access.require(principal_of(request), "annotator", project_id)
            layer = instances.get(f"project-{project_id}-sam-objects")
        else:
            image = instances.registry.get(layer_id)
            if image.kind != "image":
                raise InvalidRequestError(f"layer {layer_id!r} is not an image layer")
            layer = instances.layer_for(f"layer:{layer_id}", image.volume(image.version).base)
        return web.json_response(describe(request, layer))

    async def get_layer(request: web.Request) -> web.Response:
        return web.json_response(describe(request, layer_of(request)))

    async def object_at(request: web.Request) -> web.Response:
        layer = layer_of(request)
        try:
            x, y, z = (float(request.query[k]) for k in ("x", "y", "z"))
        except (KeyError, ValueError):
            raise InvalidRequestError("give the point as ?x=&y=&z= numbers") from None
        if not all(math.isfinite(v) for v in (x, y, z)):
            raise InvalidRequestError("the point must be finite")
        point = [int(v // 1) for v in (z, y, x)]
        return web.json_response({"object_id": layer.store.object_at(point)})

    async def get_outline(request: web.Request) -> web.Response:
        layer = layer_of(request)
        object_id = _object_id(_int_text(request.match_info["object_id"]))
        try:
            index = int(request.query["index"])
        except (KeyError, ValueError):
            raise InvalidRequestError("give the slice as ?plane=xy&index=N") from None
        ref = SliceRef(layer.store.shape, check_plane(request.query.get("plane", "xy")), index)
        region = ref.to_image(layer.store.read(ref.box)) == object_id
        rings = await run(lambda: outline(region))
        return web.json_response({"object_id": object_id, "plane": ref.plane, "index": index,
                                  "polygons_xyz": [ref.to_viewer(r).round(3).tolist()
                                                   for r in rings]})

    async def polygon(request: web.Request) -> web.Response:
        layer, body = layer_of(request), await body_of(request)
        vertices = _vertices(body)
        object_id = _object_id(body.get("object_id"), optional=True)
        replace = body.get("replace", False)
        if not isinstance(replace, bool):
            raise InvalidRequestError("replace must be true or false")
        author = principal_of(request).id

        def edit():
            ref = _slice_of(layer, body, vertices)
            box, mask = polygon_mask(ref, vertices)
            return layer.apply(lambda store: store.paint_polygon(
                ref, box, mask, object_id, replace=replace, author=author),
                class_name=body.get("class"))

        return answer(request, layer, await run(edit))

    async def clear(request: web.Request) -> web.Response:
        layer, body = layer_of(request), await body_of(request)
        object_id = _object_id(body.get("object_id"))
        if not isinstance(body.get("index"), int) or isinstance(body.get("index"), bool):
            raise InvalidRequestError("index must be an integer slice")
        ref = SliceRef(layer.store.shape, check_plane(body.get("plane", "xy")), body["index"])
        author = principal_of(request).id
        return answer(request, layer, await run(lambda: layer.apply(
            lambda store: store.clear_slice(ref, object_id, author=author))))

    async def cut(request: web.Request) -> web.Response:
        layer, body = layer_of(request), await body_of(request)
        object_id = _object_id(body.get("object_id"))
        vertices = _vertices(body)
        mode, remove = body.get("mode", "split"), body.get("remove", False)
        if mode not in ("split", "trim") or not isinstance(remove, bool):
            raise InvalidRequestError('mode must be "split" or "trim", remove true or false')
        author = principal_of(request).id

        def edit():
            ref = _slice_of(layer, body, vertices)
            if mode == "trim":
                box, mask = polygon_mask(ref, vertices)
            else:
                region = ref.to_image(layer.store.read(ref.box)) == object_id
                if not region.any():
                    raise InvalidRequestError(f"object {object_id} has no voxel on slice "
                                              f"{ref.index} ({ref.plane})")
                part = split_region(region, polyline_mask(ref, vertices))
                box, mask = ref.box, part.reshape(ref.box.shape)
            return layer.apply(lambda store: store.cut(object_id, box, mask, remove=remove,
                                                       author=author), parent=object_id)

        return answer(request, layer, await run(edit))

    async def brush(request: web.Request) -> web.Response:
        layer, body = layer_of(request), await body_of(request)
        object_id = _object_id(body.get("object_id"), optional=True)
        erase = body.get("erase", False)
        if not isinstance(erase, bool):
            raise InvalidRequestError("erase must be true or false")
        author = principal_of(request).id

        def edit():
            stroke = stroke_from_json({**body, "label": 1})
            return layer.apply(lambda store: store.brush(stroke, object_id, erase=erase,
                                                         author=author),
                               class_name=body.get("class"))

        return answer(request, layer, await run(edit))

    async def merge(request: web.Request) -> web.Response:
        layer, body = layer_of(request), await body_of(request)
        ids = body.get("object_ids")
        if not isinstance(ids, list) or len(ids) != 2:
            raise InvalidRequestError("object_ids must be [keep, other]")
        keep, other = (_object_id(i, "object_ids") for i in ids)
        author = principal_of(request).id
        return answer(request, layer, await run(lambda: layer.apply(
            lambda store: store.merge(keep, other, author=author))))

    async def delete(request: web.Request) -> web.Response:
        layer = layer_of(request)
        object_id = _object_id(_int_text(request.match_info["object_id"]))
        author = principal_of(request).id
        return answer(request, layer, await run(lambda: layer.apply(
            lambda store: store.remove(object_id, author=author))))

    def history_route(redo: bool):
        async def handler(request: web.Request) -> web.Response:
            layer = layer_of(request)
            author = principal_of(request).id
            if layer.project is not None:  # label and instance edits, one history
                fn = layer.project.redo if redo else layer.project.undo
                return answer(request, layer, await run(lambda: fn(author)))
            return answer(request, layer, await run(lambda: layer.apply(
                lambda store: (store.redo if redo else store.undo)(author))))
        return handler

    tags = ("instances",)
    lp = (Param("layer_id", description="An instance layer id (project-<id>-sam-objects, "
                                        "layer-<id>-sam-objects or collection-objects)"),
          Param("version", "query", required=False,
                description="For collection-objects: the item's objects version (names "
                            "the item; an edit from a superseded one answers 409)"))
    op = (*lp, Param("object_id", description="Object id", schema={"type": "integer"}))
    edited = {200: "Durable; the new version, object_id, box_xyz",
              400: "Bad geometry or parameters",
              403: "Another annotator holds the collection item",
              404: "No such layer or object", 409: "A superseded collection item version"}
    return [
        Route("POST", "/api/instances/layers", make_layer, name="instances_layer", tags=tags,
              role="annotator", summary="The instance layer of a project or image layer "
                                        "(made on first use)",
              request_body='{"project_id" | "layer_id"}',
              responses={200: "The layer: version, precomputed URL, objects, can_undo",
                         400: "Not an image layer", 404: "No such project or layer"}),
        Route("GET", "/api/instances/{layer_id}", get_layer, name="instances_get", tags=tags,
              parameters=lp, summary="An instance layer: version, URL, objects with their "
                                     "sources, and whether the caller can undo or redo",
              responses={200: "The layer", 404: "No such instance layer"}),
        Route("GET", "/api/instances/{layer_id}/at", object_at, name="instances_at",
              tags=tags, parameters=lp,
              summary="The object at a viewer point ?x=&y=&z= (0: background)",
              responses={200: '{"object_id"}', 400: "Bad or outside point"}),
        Route("GET", "/api/instances/{layer_id}/objects/{object_id}/outline", get_outline,
              name="instances_outline", tags=tags, parameters=op,
              summary="An object's outlines on a slice ?plane=&index= as editable polygons "
                      "(largest first); filling one gives the region back",
              responses={200: '{"polygons_xyz": [[[x, y, z], ...]]}', 400: "Bad slice"}),
        Route("POST", "/api/instances/{layer_id}/polygon", polygon, name="instances_polygon",
              tags=tags, parameters=lp, role="annotator",
              summary="Fill a polygon on a slice: a new object, or added to object_id; with "
                      "replace, it replaces object_id's region on that slice (edited "
                      "vertices). It covers what it overlaps",
              request_body='{"vertices_xyz": [[x, y, z], ...] (>= 3), "plane"?: "xy", '
                           '"index"?: slice, "object_id"?, "replace"?: false, "class"?: '
                           'semantic class of a new collection object}',
              responses=edited),
        Route("POST", "/api/instances/{layer_id}/clear", clear, name="instances_clear",
              tags=tags, parameters=lp, role="annotator",
              summary="Delete an object's region on one slice (delete a polygon)",
              request_body='{"object_id", "plane"?: "xy", "index": slice}', responses=edited),
        Route("POST", "/api/instances/{layer_id}/cut", cut, name="instances_cut", tags=tags,
              parameters=lp, role="annotator",
              summary="Polygon cutter: split object_id along a polyline drawn across it "
                      "(mode split: the smaller side(s)) or trim what a polygon covers (mode "
                      "trim); the cut part becomes a new object (object_id in the answer) "
                      "or, with remove, background",
              request_body='{"object_id", "vertices_xyz", "mode"?: "split"|"trim", '
                           '"remove"?: false, "plane"?, "index"?}', responses=edited),
        Route("POST", "/api/instances/{layer_id}/brush", brush, name="instances_brush",
              tags=tags, parameters=lp, role="annotator",
              summary="Object brush: paint object_id into background and itself only (no "
                      "object_id: a new object); with erase, clear object_id's voxels only",
              request_body='{"points_xyz", "radius", "plane"?: "xy"|"xz"|"yz"|"3d", '
                           '"object_id"?, "erase"?: false}', responses=edited),
        Route("POST", "/api/instances/{layer_id}/merge", merge, name="instances_merge",
              tags=tags, parameters=lp, role="annotator",
              summary="Merge the second object into the first",
              request_body='{"object_ids": [keep, other]}', responses=edited),
        Route("DELETE", "/api/instances/{layer_id}/objects/{object_id}", delete,
              name="instances_delete", tags=tags, parameters=op, role="annotator",
              summary="Delete an object (undoable)", responses=edited),
        Route("POST", "/api/instances/{layer_id}/undo", history_route(False),
              name="instances_undo", tags=tags, parameters=lp, role="annotator",
              summary="Undo the caller's latest edit: for a project's layer the latest of its "
                      "label and instance edits (target says which)",
              responses={200: "changed false when there was nothing to undo"}),
        Route("POST", "/api/instances/{layer_id}/redo", history_route(True),
              name="instances_redo", tags=tags, parameters=lp, role="annotator",
              summary="Redo the caller's latest undone edit (label or instance, for a "
                      "project's layer)",
              responses={200: "changed false when there was nothing to redo"}),
    ]


def _int_text(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRequestError("object id must be an integer") from None
