"""The instance annotations of a volume served as a segmentation layer (web adapter), and
the registry of those layers: one per data source, a project's made over its own store."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ilastik_web.abc import LazyVolume, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import GoneError, NotFoundError
from ilastik_web.project import Project
from ilastik_web.pyramid import build_pyramid
from ilastik_web.sam.instances import InstanceStore, InstanceVolume
from ilastik_web.server.display import LayerDisplay
from ilastik_web.server.layers import LayerRegistry, ServedLayer

T = TypeVar("T")
_DIGITS = re.compile(r"[0-9]{1,18}")


class InstanceLayer(ServedLayer):
    """The instance annotations of one volume, served as a segmentation layer.

    Versions are ``i<revision>-<uid>``; chunks of a superseded revision answer 410.
    """

    def __init__(self, layer_id: str, store: InstanceStore,
                 voxel_size: tuple[float, float, float], cache: ArrayCache,
                 project: Project | None = None):
        super().__init__(layer_id, "segmentation", name=layer_id)
        self.store = store
        #: The project whose undo history the store's edits are part of (None: their own).
        self.project = project
        self.voxel_size = voxel_size
        self.cache = cache
        self.uid = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._built: tuple[int, MultiscaleVolume] | None = None
        store.subscribe(self._notify_changed)

    @property
    def version(self) -> str:
        return f"i{self.store.revision}-{self.uid}"

    def volume(self, version: str) -> MultiscaleVolume:
        revision_text, _, uid = version[1:].partition("-")
        if not version.startswith("i") or not _DIGITS.fullmatch(revision_text) or uid != self.uid:
            raise NotFoundError(f"unknown version {version!r}")
        revision, current = int(revision_text), self.store.revision
        if revision < current:
            raise GoneError(f"instance revision {revision} was superseded by {current}")
        if revision > current:
            raise NotFoundError(f"instance revision {revision} does not exist yet")
        with self._lock:
            if self._built is None or self._built[0] != revision:
                base = InstanceVolume(self.store, self.voxel_size,
                                      key=f"{self.layer_id}-{self.uid}/i{revision}")
                self._built = (base.revision, build_pyramid(base, cache=self.cache,
                                                       name=self.layer_id, method="mode"))
            return self._built[1]

    @property
    def display(self) -> LayerDisplay:
        return LayerDisplay(opacity=0.6)

    def apply(self, operation: Callable[[InstanceStore], T], *, class_name: str | None = None,
              parent: int | None = None) -> T:
        """Run an edit of the store (its objects have no classes: ``class_name`` and
        ``parent`` are for targets that keep them, such as a collection item's)."""
        return operation(self.store)

    def changed(self) -> None:
        """Tell viewers a new revision is out (the store's edits do it themselves)."""
        self._notify_changed()


def instance_layer_id(source: str) -> str:
    """The instance layer of a source ("project:<id>" or "layer:<id>")."""
    return f"{source.replace(':', '-')}-sam-objects"


class InstanceLayers:
    """One instance-annotation layer per data source, made on first use and served.

    A project's layer (source ``project:<id>``) is made over the project's own
    :attr:`~ilastik_web.project.Project.instances`, so its edits join the project's undo
    history; a plain image layer's objects persist in ``directory/<source>``.
    """

    def __init__(self, registry: LayerRegistry, cache: ArrayCache, directory: Path | None,
                 hub=None):
        self.registry = registry
        self.cache = cache
        self.directory = directory
        self.hub = hub
        self._lock = threading.Lock()
        self._layers: dict[str, InstanceLayer] = {}

    def layer_for(self, source: str, volume: LazyVolume) -> InstanceLayer:
        name = source.replace(":", "-")
        with self._lock:
            layer = self._layers.get(source)
            if layer is None:
                project = None
                if source.startswith("project:") and self.hub is not None:
                    project = self.hub.get(source.partition(":")[2]).project
                    store = project.instances
                else:
                    folder = self.directory / name if self.directory is not None else None
                    store = InstanceStore(volume.shape, folder)
                layer = InstanceLayer(instance_layer_id(source), store, volume.voxel_size,
                                      self.cache, project)
                self._layers[source] = layer
                self.registry.replace(layer)
            return layer

    def get(self, layer_id: str) -> InstanceLayer:
        with self._lock:
            for layer in self._layers.values():
                if layer.layer_id == layer_id:
                    return layer
        if self.hub is not None and layer_id.startswith("project-") \
                and layer_id.endswith("-sam-objects"):
            project_id = layer_id.removeprefix("project-").removesuffix("-sam-objects")
            served = self.hub.get(project_id)
            return self.layer_for(f"project:{project_id}", served.project.source.base)
        raise NotFoundError(f"no instance layer {layer_id!r}")
