"""The objects of one collection item while it is being annotated.

Objects are kept in an :class:`~ilastik_web.sam.instances.InstanceStore` persisted under
``annotations/objects/<item>/`` (one file per object, written before it is acknowledged),
with each object's semantic class and source in ``meta.json`` beside them. Every change is
written through to the item's annotation (``annotations/<item>.tif`` and ``.json``, see
:mod:`ilastik_web.collections.annotations`), so the annotation is always what the
annotator sees. An item annotated before (an annotation without objects folder) has its
objects read back from the label image the first time it is opened.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.collections.annotations import OBJECT_SOURCES, ItemAnnotation
from ilastik_web.errors import InvalidRequestError, NotFoundError
from ilastik_web.sam.instances import InstanceStore

#: The class of an object whose annotator named none.
DEFAULT_CLASS = "object"
_CLASS_MAX = 64
T = TypeVar("T")


def check_class_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > _CLASS_MAX \
            or not name.isprintable():
        raise InvalidRequestError(f"a class name is 1-{_CLASS_MAX} printable characters")
    return name.strip()


class ItemObjects:
    """Objects (ids 1, 2, ...) of one item, their classes and sources.

    Parameters
    ----------
    shape
        The item's spatial shape (z, y, x).
    directory
        The item's objects folder.
    existing
        The item's stored annotation, if any: its objects seed an empty folder.
    write_through
        Called with the item's full annotation after every change (``None`` once the last
        object is gone); it may refuse (raise) before anything changed.
    """

    def __init__(self, shape, directory: Path, *, existing: ItemAnnotation | None = None,
                 write_through: Callable[[ItemAnnotation | None, str], None]):
        self.directory = Path(directory)
        fresh = not InstanceStore.holds_objects(self.directory)
        self.store = InstanceStore(shape, self.directory)
        self._write_through = write_through
        self._lock = threading.Lock()
        self._meta: dict[int, dict[str, str]] = self._read_meta()
        if fresh and existing is not None:
            self._import(existing)

    @property
    def revision(self) -> int:
        return self.store.revision

    def _meta_path(self) -> Path:
        return self.directory / "meta.json"

    def _read_meta(self) -> dict[int, dict[str, str]]:
        try:
            data = json.loads(self._meta_path().read_text())
        except (OSError, ValueError):
            data = {}
        # Entries of objects gone stay: an undo may bring them back (ids are never reused).
        return {int(k): v for k, v in data.items() if k.isdigit()}

    def _write_meta(self) -> None:
        tmp = self.directory / f".meta.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps({str(k): v for k, v in sorted(self._meta.items())}))
        os.replace(tmp, self._meta_path())

    def _import(self, annotation: ItemAnnotation) -> None:
        from scipy import ndimage

        labels = annotation.labels
        slices = ndimage.find_objects(labels)
        for old_id, where in enumerate(slices, start=1):
            if where is None:
                continue
            box = Box(tuple(s.start for s in where), tuple(s.stop for s in where))
            new_id = self.store.add(box, labels[where] == old_id)
            self._meta[new_id] = {
                "class": annotation.classes.get(old_id) or DEFAULT_CLASS,
                "source": annotation.sources.get(old_id) or "import"}
        self._write_meta()

    def annotation(self) -> ItemAnnotation | None:
        """The item's annotation as the objects are now (None: no object)."""
        ids = self.store.object_ids
        if not ids:
            return None
        labels = self.store.read(Box.from_shape(self.store.shape))
        present = {int(i) for i in np.unique(labels) if i}  # a covered object has no voxel
        return ItemAnnotation(labels,
                              {i: self._meta.get(i, {}).get("class", DEFAULT_CLASS)
                               for i in present},
                              {i: self._meta.get(i, {}).get("source", "import")
                               for i in present})

    def list(self) -> list[dict]:
        with self._lock:
            return [{"id": i, **self._meta.get(i, {})} for i in self.store.object_ids]

    def edit(self, operation: Callable[[InstanceStore], T], *, user: str,
             class_name: str | None = None, parent: int | None = None) -> T:
        """Run an edit of the store (an :class:`InstanceStore` operation, undo or redo)
        and write the annotation through.

        Objects it makes get ``class_name``, else the class of ``parent`` (the object a
        cut was taken from), else :data:`DEFAULT_CLASS`; their source is the store's.
        Returns what ``operation`` returned (None: nothing changed, nothing is written).
        """
        if class_name is not None:
            class_name = check_class_name(class_name)
        with self._lock:
            result = operation(self.store)
            if result is None:
                return result
            fresh = [i for i in self.store.object_ids if i not in self._meta]
            if fresh:
                sources = self.store.sources()
                inherited = self._meta.get(parent, {}).get("class") if parent else None
                for object_id in fresh:
                    self._meta[object_id] = {
                        "class": class_name or inherited or DEFAULT_CLASS,
                        "source": sources.get(object_id, "import")}
                self._write_meta()
            self._write_through(self.annotation(), user)
            return result

    def add(self, box: Box, mask: np.ndarray, *, class_name: str = DEFAULT_CLASS,
            source: str = "sam", user: str) -> int:
        """Store a new object and write the annotation through; returns its id."""
        if source not in OBJECT_SOURCES:
            raise InvalidRequestError(f"an object's source is one of {OBJECT_SOURCES}")
        return self.edit(lambda store: store.add(box, mask, source=source, author=user),
                         user=user, class_name=class_name)

    def remove(self, object_id: int, *, user: str) -> None:
        if object_id not in self.store.object_ids:
            raise NotFoundError(f"no object {object_id}")
        self.edit(lambda store: store.remove(object_id, author=user), user=user)
