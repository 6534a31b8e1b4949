"""The instance annotations of a volume served as a segmentation layer (web adapter)."""

from __future__ import annotations

import re
import secrets
import threading

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import GoneError, NotFoundError
from ilastik_web.pyramid import build_pyramid
from ilastik_web.sam.instances import InstanceStore, InstanceVolume
from ilastik_web.server.display import LayerDisplay
from ilastik_web.server.layers import ServedLayer

_DIGITS = re.compile(r"[0-9]{1,18}")


class InstanceLayer(ServedLayer):
    """The instance annotations of one volume, served as a segmentation layer.

    Versions are ``i<revision>-<uid>``; chunks of a superseded revision answer 410.
    """

    def __init__(self, layer_id: str, store: InstanceStore,
                 voxel_size: tuple[float, float, float], cache: ArrayCache):
        super().__init__(layer_id, "segmentation", name=layer_id)
        self.store = store
        self.voxel_size = voxel_size
        self.cache = cache
        self.uid = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._built: tuple[int, MultiscaleVolume] | None = None

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

    def changed(self) -> None:
        """Tell viewers a new revision is out."""
        self._notify_changed()
