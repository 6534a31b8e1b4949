"""Annotations of a collection's items, kept beside the data in ``annotations/``.

Per item ``<item>.tif`` holds the instance ids (uint32, z, y, x; 0 is background) and
``<item>.json`` its metadata: the semantic class of each object, where each object came
from (SAM, polygon, brush, ...), the author and the time. The JSON is written last, so an
item counts as annotated only once both files are complete; both are replaced atomically.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ilastik_web.errors import InvalidRequestError, NotFoundError

#: Where an object came from.
OBJECT_SOURCES = ("sam", "amg", "ais", "polygon", "brush", "import")


@dataclass(frozen=True)
class ItemAnnotation:
    """One item's instance labels and what is known about each object."""

    labels: np.ndarray  # uint32 (z, y, x)
    classes: dict[int, str] = field(default_factory=dict)  # object id -> class name
    sources: dict[int, str] = field(default_factory=dict)  # object id -> OBJECT_SOURCES
    author: str = ""
    time: float = 0.0

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 3 or labels.dtype.kind not in "ui":
            raise InvalidRequestError("instance labels are an integer (z, y, x) array")
        if labels.size and labels.min() < 0:
            raise InvalidRequestError("instance ids are >= 0")
        object.__setattr__(self, "labels", labels.astype(np.uint32, copy=False))
        ids = set(self.object_ids)
        for name, mapping in (("classes", self.classes), ("sources", self.sources)):
            unknown = {int(k) for k in mapping} - ids
            if unknown:
                raise InvalidRequestError(f"{name} name objects not in the labels: "
                                          f"{sorted(unknown)[:10]}")
        bad = {v for v in self.sources.values() if v not in OBJECT_SOURCES}
        if bad:
            raise InvalidRequestError(f"object sources must be in {OBJECT_SOURCES}")

    @property
    def object_ids(self) -> list[int]:
        ids = np.unique(self.labels)
        return [int(i) for i in ids if i]

    def metadata(self, item_id: str) -> dict:
        return {"item": item_id, "author": self.author, "time": self.time,
                "shape": list(self.labels.shape),
                "classes": {str(k): v for k, v in sorted(self.classes.items())},
                "sources": {str(k): v for k, v in sorted(self.sources.items())}}


class AnnotationStore:
    """The ``annotations/`` folder of a collection."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def _paths(self, item_id: str) -> tuple[Path, Path]:
        return self.directory / f"{item_id}.tif", self.directory / f"{item_id}.json"

    def exists(self, item_id: str) -> bool:
        return self._paths(item_id)[1].is_file()

    def save(self, item_id: str, annotation: ItemAnnotation) -> dict:
        """Write (replace) ``item_id``'s annotation; returns its metadata."""
        import tifffile

        labels_path, meta_path = self._paths(item_id)
        meta = annotation.metadata(item_id)
        if not meta["time"]:
            meta["time"] = time.time()
        self.directory.mkdir(parents=True, exist_ok=True)
        suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"
        with self._lock:
            tmp = labels_path.with_name(labels_path.name + suffix)
            tifffile.imwrite(tmp, annotation.labels, compression="zlib",
                             photometric="minisblack")
            os.replace(tmp, labels_path)
            tmp = meta_path.with_name(meta_path.name + suffix)
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, meta_path)
        return meta

    def delete(self, item_id: str) -> None:
        """Forget ``item_id``'s annotation (it counts as unannotated again)."""
        labels_path, meta_path = self._paths(item_id)
        with self._lock:
            meta_path.unlink(missing_ok=True)  # first: the item is unannotated at once
            labels_path.unlink(missing_ok=True)

    def load(self, item_id: str) -> ItemAnnotation:
        import tifffile

        labels_path, meta_path = self._paths(item_id)
        if not meta_path.is_file():
            raise NotFoundError(f"item {item_id!r} has no annotation")
        meta = json.loads(meta_path.read_text())
        labels = tifffile.imread(labels_path)
        labels = labels.reshape((1,) * (3 - labels.ndim) + labels.shape)
        return ItemAnnotation(labels, {int(k): v for k, v in meta["classes"].items()},
                              {int(k): v for k, v in meta["sources"].items()},
                              meta.get("author", ""), float(meta.get("time", 0.0)))

    def metadata(self, item_id: str) -> dict:
        _, meta_path = self._paths(item_id)
        if not meta_path.is_file():
            raise NotFoundError(f"item {item_id!r} has no annotation")
        return json.loads(meta_path.read_text())
