"""Image collection routes: items and their status, per-user navigation and assignment,
SAM objects into the item's annotation, training-set export and pixel classification
across items (tasks).

A served collection is one dataset: its layers (:mod:`.collection_layers`) serve every
item under versions that name it, and ``GET /api/collection/items/{item_id}`` tells a
viewer which versions show an item. ``POST /api/collection/navigate`` moves an annotator
to the next or previous item or to the next one nobody has annotated or is working on,
claiming it for them (the principal's id is the user). Objects accepted from a SAM
preview — prompted with the image layer's ``layer_id`` and the item's ``version`` — are
written through to ``annotations/`` beside the data at once.

Without a collection the routes answer 404.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from ilastik_web.cache import ArrayCache
from ilastik_web.collections import Collection
from ilastik_web.collections.pixel import CollectionClassifier, train_across_items
from ilastik_web.collections.trainingset import LAYOUTS, export_training_set
from ilastik_web.errors import InvalidRequestError, NotFoundError, TooManyRequestsError
from ilastik_web.project import DEFAULT_SELECTION
from ilastik_web.sam.service import SamService
from ilastik_web.sam.tasks import TaskQueue
from ilastik_web.server.auth import principal_of
from ilastik_web.server.collection_layers import (
    CollectionImageLayer,
    CollectionObjectsLayer,
    CollectionPredictionLayer,
)
from ilastik_web.server.layers import LayerRegistry
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.server.urls import base_url
from ilastik_web.server.viewer_state import precomputed_path

T = TypeVar("T")

TRAINING_SETS = "training-sets"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
DIRECTIONS = ("next", "previous", "unannotated", "first")


class CollectionSite:
    """A collection as the server serves it: its layers, tasks and classifier.

    Made by the app factory, which closes it. ``cache`` keeps the layers' computed levels,
    ``features`` the pixel classifier's features (default: ``cache``).
    """

    def __init__(self, collection: Collection, registry: LayerRegistry, cache: ArrayCache,
                 features: ArrayCache | None = None):
        self.collection = collection
        self.registry = registry
        uid = secrets.token_hex(4)
        self.image = CollectionImageLayer(collection, cache, uid)
        self.objects = CollectionObjectsLayer(collection, cache, uid)
        self.prediction = CollectionPredictionLayer(collection, cache, uid,
                                                    lambda: self.classifier)
        self.features = features if features is not None else cache
        self.classifier: CollectionClassifier | None = None
        self.tasks = TaskQueue(workers=1, max_pending=4)
        self._train_lock = threading.Lock()
        registry.add(self.image)
        registry.add(self.objects)

    def close(self) -> None:
        self.tasks.close()

    def layer_view(self, request: web.Request, layer, item_id: str) -> dict:
        version = layer.version_of(item_id)
        return {"layer_id": layer.layer_id, "version": version,
                "url": base_url(request) + precomputed_path(layer.layer_id, version)}

    def item_view(self, request: web.Request, item_id: str, user: str) -> dict:
        collection = self.collection
        item = collection.item(item_id)
        status = next(s for s in collection.status(user) if s["id"] == item.item_id)
        if status["annotated"]:
            meta = collection.annotations.metadata(item.item_id)
            status.update(author=meta.get("author"), time=meta.get("time"))
        base = collection.open(item.item_id).base
        return {
            "item": status,
            "shape": list(base.shape), "voxel_size": list(base.voxel_size),
            "image": self.layer_view(request, self.image, item.item_id),
            "objects": self.layer_view(request, self.objects, item.item_id),
            "object_list": collection.objects(item.item_id).list(),
            "prediction": (self.layer_view(request, self.prediction, item.item_id)
                           if self.classifier is not None else None),
        }

    def train(self, task) -> dict[str, Any]:
        with self._train_lock:
            generation = (self.classifier.generation if self.classifier else 0) + 1
            trained = train_across_items(self.collection, DEFAULT_SELECTION, self.features,
                                         generation=generation, should_stop=task.should_stop,
                                         report=task.report)
            self.classifier = trained
            if self.prediction.layer_id not in self.registry:
                self.registry.add(self.prediction)
            return trained.to_json()


def _user(request: web.Request) -> str:
    return principal_of(request).id


def collection_routes(site: CollectionSite | None, sam: SamService | None,
                      executor) -> list[Route]:
    """Routes over ``site`` (None: no collection is served, every route answers 404).

    Parameters
    ----------
    sam
        For accepting SAM previews as objects.
    executor
        Where a request's small blocking work runs (the interactive lane).
    """

    def need() -> CollectionSite:
        if site is None:
            raise NotFoundError("no image collection is served here (serve --collection DIR)")
        return site

    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def body_of(request: web.Request) -> dict:
        body = await read_json(request, max_bytes=1 << 20) if request.can_read_body else {}
        if not isinstance(body, dict):
            raise InvalidRequestError("expected a JSON object")
        return body

    async def info(request: web.Request) -> web.Response:
        if site is None:  # a 200, so viewers probing for a collection log no error
            return web.json_response({"served": False})
        s, user = need(), _user(request)
        items = await run(lambda: s.collection.status(user))
        return web.json_response({
            "served": True, "count": len(items), "user": user, "items": items,
            "annotated": sum(i["annotated"] for i in items),
            "layers": {"image": s.image.layer_id, "objects": s.objects.layer_id,
                       "prediction": s.prediction.layer_id},
            "layouts": list(LAYOUTS),
            "classifier": s.classifier.to_json() if s.classifier is not None else None,
        })

    async def item(request: web.Request) -> web.Response:
        s, user = need(), _user(request)
        item_id = request.match_info["item_id"]
        return web.json_response(await run(lambda: s.item_view(request, item_id, user)))

    async def navigate(request: web.Request) -> web.Response:
        s, user = need(), _user(request)
        body = await body_of(request)
        direction = body.get("to", "next")
        current = body.get("from")
        if direction not in DIRECTIONS:
            raise InvalidRequestError(f'"to" is one of {DIRECTIONS}')
        if current is not None and not isinstance(current, str):
            raise InvalidRequestError('"from" is an item id')
        collection = s.collection

        def go() -> dict:
            if current is not None:
                collection.item(current)
            if direction == "unannotated":
                target = collection.next_unannotated(user, after=current)
            elif direction == "first" or current is None:
                target = collection.items[0]
            else:
                target = collection.neighbour(current, 1 if direction == "next" else -1)
            if target is None:
                return {"item": None, "message": {
                    "unannotated": "every item is annotated or being annotated by someone",
                    "next": "this is the last item",
                    "previous": "this is the first item"}.get(direction, "")}
            if target.item_id != current:
                # Browsing claims a free item (others' "next unannotated" then skips it);
                # one somebody else holds stays theirs, and may still be looked at.
                collection.assignments.claim(target.item_id, user, exclusive=True)
                if current is not None and not collection.annotations.exists(current):
                    collection.assignments.release(current, user)
            return s.item_view(request, target.item_id, user)

        return web.json_response(await run(go))

    async def add_object(request: web.Request) -> web.Response:
        s, user = need(), _user(request)
        if sam is None:
            raise NotFoundError("SAM is not configured")
        item_id = request.match_info["item_id"]
        body = await body_of(request)
        mask_id = body.get("mask_id")
        if not isinstance(mask_id, str):
            raise InvalidRequestError("mask_id (of a SAM preview) must be a string")
        class_name = body.get("class", "object")
        mask = sam.masks.get(mask_id)
        version = s.image.version_of(s.collection.item(item_id).item_id)
        if mask.source != f"layer:{s.image.layer_id}@{version}":
            raise InvalidRequestError(f"mask {mask_id} was not prompted on item {item_id!r}")

        def add() -> dict:
            object_id = s.collection.add_object(item_id, mask.box, mask.mask,
                                                class_name=class_name, source="sam",
                                                user=user)
            sam.reject(mask_id)  # taken: the preview is gone
            return {"object_id": object_id, **s.item_view(request, item_id, user)}

        return web.json_response(await run(add))

    async def delete_object(request: web.Request) -> web.Response:
        s, user = need(), _user(request)
        item_id = request.match_info["item_id"]
        try:
            object_id = int(request.match_info["object_id"])
        except ValueError:
            raise InvalidRequestError("object id must be an integer") from None

        def remove() -> dict:
            s.collection.remove_object(item_id, object_id, user)
            return {"deleted": object_id, **s.item_view(request, item_id, user)}

        return web.json_response(await run(remove))

    async def export(request: web.Request) -> web.Response:
        s = need()
        body = await body_of(request)
        layout = body.get("layout", "tiff")
        if layout not in LAYOUTS:
            raise InvalidRequestError(f"layout must be one of {LAYOUTS}")
        val_fraction = body.get("val_fraction", 0.2)
        seed = body.get("seed", 0)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) \
                or not 0 <= val_fraction < 1:
            raise InvalidRequestError("val_fraction is a number in [0, 1)")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidRequestError("seed must be an integer")
        name = body.get("name") or f"{layout}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequestError("name: 1-64 letters, digits, '_', '.', '-'")
        output = s.collection.annotations.directory / TRAINING_SETS / name
        if output.exists():
            raise InvalidRequestError(f"training set {name!r} exists; choose another name")

        def write(task) -> dict:
            output.parent.mkdir(parents=True, exist_ok=True)
            task.report(0.05, f"writing {layout} to {name}")
            manifest = export_training_set(s.collection, output, layout=layout,
                                           val_fraction=float(val_fraction), seed=seed)
            return {"path": str(output), "name": name, "layout": layout,
                    "items": len(manifest["items"]),
                    "splits": {i["item"]: i["split"] for i in manifest["items"]}}

        try:
            task = s.tasks.submit("training-set", {"layout": layout, "name": name}, write)
        except TooManyRequestsError as exc:
            raise web.HTTPTooManyRequests(text=str(exc), headers={"Retry-After": "1"}) from None
        return web.json_response(task.to_json(), status=202)

    async def train(request: web.Request) -> web.Response:
        s = need()
        annotated = await run(lambda: [i for i in s.collection.items
                                       if s.collection.annotations.exists(i.item_id)])
        if not annotated:
            raise InvalidRequestError("no item of the collection is annotated yet")
        try:
            task = s.tasks.submit("pixel-training", {"items": len(annotated)}, s.train)
        except TooManyRequestsError as exc:
            raise web.HTTPTooManyRequests(text=str(exc), headers={"Retry-After": "1"}) from None
        return web.json_response(task.to_json(), status=202)

    async def get_task(request: web.Request) -> web.Response:
        return web.json_response(need().tasks.get(request.match_info["task_id"]).to_json())

    async def cancel_task(request: web.Request) -> web.Response:
        return web.json_response(need().tasks.cancel(request.match_info["task_id"]).to_json())

    tags = ("collection",)
    item_p = (Param("item_id", description="An item id, as listed by /api/collection"),)
    task_p = (Param("task_id", description="A task id from export or train"),)
    return [
        Route("GET", "/api/collection", info, name="collection_info", tags=tags,
              summary="The served image collection: every item with its status (annotated, "
                      "assigned to whom, mine), its layers, the pixel classifier",
              responses={200: "The collection", 404: "No collection is served"}),
        Route("GET", "/api/collection/items/{item_id}", item, name="collection_item",
              tags=tags, parameters=item_p,
              summary="One item: status, author, shape, and the layer versions (URLs) that "
                      "show its image, objects and prediction",
              responses={200: "The item", 404: "No such item"}),
        Route("POST", "/api/collection/navigate", navigate, name="collection_navigate",
              tags=tags, role="annotator",
              summary="Move to the next, previous or first item, or to the next item nobody "
                      "annotated or works on; the item is claimed for the caller if free",
              request_body='{"from"?: item id, "to": "next"|"previous"|"unannotated"|"first"}',
              responses={200: "The item (item: null when there is none)",
                         400: "Bad direction", 404: "No such item"}),
        Route("POST", "/api/collection/items/{item_id}/objects", add_object,
              name="collection_add_object", tags=tags, role="annotator", parameters=item_p,
              summary="Accept a SAM preview (prompted on this item's image version) as a new "
                      "object of the item; its annotation in annotations/ is rewritten",
              request_body='{"mask_id": preview, "class"?: semantic class (default "object")}',
              responses={200: "The object id and the item's new versions",
                         400: "A mask of another item or a bad class",
                         403: "Another annotator holds the item",
                         404: "Unknown item or mask"}),
        Route("DELETE", "/api/collection/items/{item_id}/objects/{object_id}", delete_object,
              name="collection_delete_object", tags=tags, role="annotator",
              parameters=(*item_p, Param("object_id", description="Object id",
                                         schema={"type": "integer"})),
              summary="Delete an object of the item (the last one: the item is unannotated)",
              responses={200: "Deleted; the item's new versions",
                         403: "Another annotator holds the item",
                         404: "Unknown item or object"}),
        Route("POST", "/api/collection/exports", export, name="collection_export",
              tags=tags, role="owner",
              summary="Write a training set of every annotated item (a task) under "
                      "annotations/training-sets/<name>: TIFF image/label folders, cellpose "
                      "pairs or OME-Zarr with labels/, split train/val by item, manifest.json",
              request_body='{"layout"?: "tiff"|"cellpose"|"ome-zarr", "val_fraction"?: 0.2, '
                           '"seed"?: 0, "name"?: folder name}',
              responses={202: "The queued task", 400: "Bad layout, fraction or name",
                         429: "Too many tasks"}),
        Route("POST", "/api/collection/train", train, name="collection_train", tags=tags,
              role="annotator",
              summary="Train the pixel classifier on every annotated item (objects: their "
                      "class, the rest: background), a task; the prediction layer then "
                      "predicts any item",
              responses={202: "The queued task", 400: "No item is annotated",
                         429: "Too many tasks"}),
        Route("GET", "/api/collection/tasks/{task_id}", get_task, name="collection_task",
              tags=tags, parameters=task_p,
              summary="An export or training task: state, progress, result",
              responses={200: "The task", 404: "Unknown task"}),
        Route("DELETE", "/api/collection/tasks/{task_id}", cancel_task,
              name="collection_cancel_task", tags=tags, role="annotator",
              parameters=task_p, summary="Cancel a task",
              responses={200: "The task", 404: "Unknown task"}),
    ]
