"""The current collection item's objects as a target of the instance tools (web adapter).

The instance routes (:mod:`ilastik_web.server.routes_instances`) act on the
``collection-objects`` layer like on any instance layer; which item they edit is named by
the layer version the viewer shows (``?version=o<index>r<revision>-<uid>``, from
``GET /api/collection/items/{item_id}``). Edits run through
:meth:`~ilastik_web.collections.Collection.edit_objects`: refused (403) while another
annotator holds the item, written through to ``annotations/`` with each new object's
class and source. An edit made from a superseded version (someone, or another tab, edited
the item since) answers 409: the viewer reloads the item and tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ilastik_web.collections import Collection
from ilastik_web.errors import ConflictError, InvalidRequestError, NotFoundError
from ilastik_web.sam.instances import InstanceStore
from ilastik_web.server.collection_layers import CollectionObjectsLayer

T = TypeVar("T")


class ItemInstances:
    """One item's objects, seen by one user, with the interface of an
    :class:`~ilastik_web.server.instance_layer.InstanceLayer` that the routes use."""

    #: The item's edits have their own per-author history (the store's).
    project = None

    def __init__(self, layer: CollectionObjectsLayer, collection: Collection, item_id: str,
                 user: str):
        self.layer = layer
        self.collection = collection
        self.item_id = item_id
        self.user = user

    @property
    def layer_id(self) -> str:
        return self.layer.layer_id

    @property
    def store(self) -> InstanceStore:
        return self.collection.objects(self.item_id).store

    @property
    def version(self) -> str:
        return self.layer.version_of(self.item_id)

    def apply(self, operation: Callable[[InstanceStore], T], *, class_name: str | None = None,
              parent: int | None = None) -> T:
        return self.collection.edit_objects(self.item_id, operation, user=self.user,
                                            class_name=class_name, parent=parent)

    def describe(self) -> dict:
        return {"item_id": self.item_id, "classes": {
            o["id"]: o.get("class") for o in self.collection.objects(self.item_id).list()}}


def item_instances(layer: CollectionObjectsLayer, collection: Collection
                   ) -> Callable[[str | None, str, bool], ItemInstances]:
    """The resolver the instance routes call with (version, user, is_edit)."""

    def resolve(version: str | None, user: str, edit: bool) -> ItemInstances:
        if not isinstance(version, str) or not version:
            raise InvalidRequestError(
                f"give the item's objects version as ?version= (layer {layer.layer_id!r} "
                "serves every item; GET /api/collection/items/<id> tells its version)")
        item_id, revision = layer.parse(version)
        current = collection.objects(item_id).revision
        if edit and revision != current:
            if revision > current:
                raise NotFoundError(f"objects revision {revision} of {item_id!r} does not "
                                    "exist")
            raise ConflictError(f"the objects of item {item_id!r} changed since revision "
                                f"{revision} (now {current}): reload the item and redo "
                                "the edit")
        return ItemInstances(layer, collection, item_id, user)

    return resolve
