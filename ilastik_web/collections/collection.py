"""A collection of images served as one dataset, one item at a time.

Items are the readable images of a folder (TIFF and HDF5 files, zarr / N5 / precomputed
folders), sorted by name, or an explicit list of locations. Each item has a stable id
made from its file name. Annotations go into ``<folder>/annotations/`` (see
:mod:`ilastik_web.collections.annotations`): the provider's files are never written.
Annotators move to the next or previous item, or to the next item nobody has annotated or
is working on (:mod:`ilastik_web.collections.assignment`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.collections.annotations import AnnotationStore, ItemAnnotation
from ilastik_web.collections.assignment import Assignments
from ilastik_web.collections.objects import DEFAULT_CLASS, ItemObjects
from ilastik_web.errors import InvalidRequestError, NotFoundError
from ilastik_web.sources import open_source
from ilastik_web.sources.hdf5 import HDF5_SUFFIXES
from ilastik_web.sources.tiff import TIFF_SUFFIXES

#: The annotator when there are no user accounts.
LOCAL_USER = "local"
ANNOTATIONS = "annotations"
OBJECTS = "objects"
_FOLDER_MARKERS = ("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json", "info")


@dataclass(frozen=True)
class CollectionItem:
    """One image of a collection."""

    item_id: str
    location: str
    index: int

    def to_json(self) -> dict:
        return {"id": self.item_id, "name": Path(self.location).name, "index": self.index}


def _item_id(location: str, taken: set[str]) -> str:
    name = Path(location.rstrip("/")).name
    for suffix in (*TIFF_SUFFIXES, *HDF5_SUFFIXES, ".zarr", ".n5", ".ome"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "item"
    item_id, n = base, 2
    while item_id in taken:
        item_id, n = f"{base}-{n}", n + 1
    taken.add(item_id)
    return item_id


def readable_items(folder: Path) -> list[str]:
    """The image locations in ``folder`` (not recursive), sorted by name."""
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.name == ANNOTATIONS:
            continue
        if path.is_file() and path.name.lower().endswith(TIFF_SUFFIXES + HDF5_SUFFIXES):
            found.append(str(path))
        elif path.is_dir() and any((path / marker).exists() for marker in _FOLDER_MARKERS):
            found.append(str(path))
    return found


class Collection:
    """Items, their annotations and who works on which.

    Parameters
    ----------
    locations
        The items, in order.
    annotations_dir
        Where annotations and assignments are kept.
    allowed_roots
        As for :func:`~ilastik_web.sources.open_source`.
    claim_seconds
        How long an item stays assigned to an annotator who stopped saving.
    """

    def __init__(self, locations: Sequence[str], annotations_dir: Path, *,
                 allowed_roots: Sequence[Path] | None = None, claim_seconds: float = 3600.0):
        if not locations:
            raise InvalidRequestError("a collection needs at least one image")
        taken: set[str] = set()
        self.items = [CollectionItem(_item_id(loc, taken), str(loc), i)
                      for i, loc in enumerate(locations)]
        self._by_id = {item.item_id: item for item in self.items}
        self.allowed_roots = allowed_roots
        self.annotations = AnnotationStore(Path(annotations_dir))
        self.assignments = Assignments(Path(annotations_dir) / "assignments.json",
                                       claim_seconds=claim_seconds)
        self._objects: dict[str, ItemObjects] = {}
        self._objects_lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: Path, **kwargs) -> Collection:
        """The images of ``folder``; annotations in ``folder/annotations``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise NotFoundError(f"{folder} is not a folder")
        locations = readable_items(folder)
        if not locations:
            raise InvalidRequestError(f"{folder} holds no readable images")
        return cls(locations, folder / ANNOTATIONS, **kwargs)

    def __len__(self) -> int:
        return len(self.items)

    def item(self, item_id: str) -> CollectionItem:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise NotFoundError(f"no item {item_id!r} in the collection") from None

    def open(self, item_id: str) -> MultiscaleVolume:
        """The item's image, opened lazily."""
        return open_source(self.item(item_id).location, allowed_roots=self.allowed_roots)

    def neighbour(self, item_id: str, step: int) -> CollectionItem | None:
        """The item ``step`` places after (negative: before) ``item_id``; None past an end."""
        index = self.item(item_id).index + int(step)
        return self.items[index] if 0 <= index < len(self.items) else None

    def next_unannotated(self, user: str = LOCAL_USER, after: str | None = None
                         ) -> CollectionItem | None:
        """Claim for ``user`` the first item (after ``after``, wrapping round) that has no
        annotation and nobody else works on; None when there is none."""
        start = self.item(after).index + 1 if after is not None else 0
        order = self.items[start:] + self.items[:start]
        for item in order:
            if self.annotations.exists(item.item_id):
                continue
            if self.assignments.claim(item.item_id, user, exclusive=True):
                return item
        return None

    def save(self, item_id: str, annotation: ItemAnnotation, user: str = LOCAL_USER) -> dict:
        """Store ``user``'s annotation of ``item_id`` (its labels must match the image's
        shape); the item must not be held by someone else, and stays claimed by ``user``."""
        shape = tuple(self.open(item_id).base.shape)
        if tuple(annotation.labels.shape) != shape:
            raise InvalidRequestError(f"labels of shape {annotation.labels.shape} do not fit "
                                      f"item {item_id!r} of shape {shape}")
        self.assignments.claim(item_id, user)
        return self.annotations.save(item_id, replace(annotation, author=user))

    def status(self, user: str = LOCAL_USER) -> list[dict]:
        """Every item with its annotation state and assignee."""
        claims = self.assignments.current()
        out = []
        for item in self.items:
            entry = item.to_json()
            entry["annotated"] = self.annotations.exists(item.item_id)
            claim = claims.get(item.item_id)
            entry["assigned_to"] = claim["user"] if claim else None
            entry["mine"] = bool(claim and claim["user"] == user)
            out.append(entry)
        return out

    # -- objects of the item being annotated ----------------------------------------------

    def objects(self, item_id: str) -> ItemObjects:
        """The item's objects (opened once; seeded from an annotation made before)."""
        item = self.item(item_id)
        with self._objects_lock:
            found = self._objects.get(item.item_id)
            if found is None:
                shape = tuple(self.open(item.item_id).base.shape)
                existing = (self.annotations.load(item.item_id)
                            if self.annotations.exists(item.item_id) else None)
                found = ItemObjects(
                    shape, self.annotations.directory / OBJECTS / item.item_id,
                    existing=existing,
                    write_through=lambda annotation, user, i=item.item_id:
                        self._write_through(i, annotation, user))
                self._objects[item.item_id] = found
            return found

    def _write_through(self, item_id: str, annotation: ItemAnnotation | None,
                       user: str) -> None:
        if annotation is None:
            self.annotations.delete(item_id)
        else:
            self.save(item_id, annotation, user)

    def add_object(self, item_id: str, box: Box, mask, *, class_name: str = DEFAULT_CLASS,
                   source: str = "sam", user: str = LOCAL_USER) -> int:
        """Add an object to ``user``'s item (refused while someone else holds it); the
        item's annotation is rewritten. Returns the object id."""
        objects = self.objects(item_id)
        self.assignments.claim(item_id, user)
        return objects.add(box, mask, class_name=class_name, source=source, user=user)

    def edit_objects(self, item_id: str, operation, *, user: str = LOCAL_USER,
                     class_name: str | None = None, parent: int | None = None):
        """Run an instance edit (``operation(store)``, see :meth:`ItemObjects.edit`) on
        ``user``'s item (refused while someone else holds it); the item's annotation is
        rewritten. Returns what ``operation`` returned."""
        objects = self.objects(item_id)
        self.assignments.claim(item_id, user)
        return objects.edit(operation, user=user, class_name=class_name, parent=parent)

    def remove_object(self, item_id: str, object_id: int, user: str = LOCAL_USER) -> None:
        objects = self.objects(item_id)
        self.assignments.claim(item_id, user)
        objects.remove(object_id, user=user)
