"""The served-layer contract: what the precomputed routes and the viewer serve.

A :class:`ServedLayer` is a named, versioned multiscale volume. Its chunks are immutable
per version (the version is part of every URL), so a layer whose data changes
(predictions, labels) publishes a new version and the viewer swaps its source URL; old
versions answer 410 Gone, and a layer with nothing to show yet answers 503.
"""

from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Literal

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import GoneError, InvalidRequestError, NotFoundError, NotReadyError
from ilastik_web.server.display import LayerDisplay, image_display
from ilastik_web.server.served_pyramid import complete_pyramid

log = logging.getLogger(__name__)

LayerKind = Literal["image", "segmentation"]
LAYER_KINDS = ("image", "segmentation")
_LAYER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Called with the layer that changed (new version or new display).
LayerListener = Callable[["ServedLayer"], None]


def check_layer_id(layer_id: str) -> str:
    """Return ``layer_id`` if it is URL-safe, else raise InvalidRequestError."""
    if not _LAYER_ID.match(layer_id):
        raise InvalidRequestError(
            f"layer id {layer_id!r} must be 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return layer_id


def make_layer_id(name: str, taken: Iterable[str] = ()) -> str:
    """A URL-safe layer id derived from ``name``, made unique against ``taken``."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._")[:56] or "layer"
    if not base[0].isalnum():
        base = "l" + base
    taken = set(taken)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


class ServedLayer(ABC):
    """A layer the server serves as precomputed data and the viewer shows.

    Subclasses implement :attr:`version` and :meth:`volume`; they call
    :meth:`_notify_changed` when either changes so open viewers follow.

    Parameters
    ----------
    layer_id
        URL-safe id, unique in its registry.
    kind
        ``"image"`` or ``"segmentation"``.
    name
        Name shown in the viewer (defaults to ``layer_id``).
    """

    #: Suffixes a viewer may append to a version for another view of the same data (e.g.
    #: labels as outlines); a new version keeps the viewer's suffix.
    variants: tuple[str, ...] = ()

    def __init__(self, layer_id: str, kind: LayerKind, *, name: str | None = None):
        if kind not in LAYER_KINDS:
            raise InvalidRequestError(f"layer kind must be one of {LAYER_KINDS}, got {kind!r}")
        self.layer_id = check_layer_id(layer_id)
        self.kind: LayerKind = kind
        self.name = name or layer_id
        self._listeners: list[LayerListener] = []
        self._listeners_lock = threading.Lock()

    @property
    @abstractmethod
    def version(self) -> str:
        """The current version, a URL-safe string that changes whenever the data does."""

    @abstractmethod
    def volume(self, version: str) -> MultiscaleVolume:
        """The pyramid of ``version``.

        Raises
        ------
        GoneError
            ``version`` was superseded.
        NotReadyError
            Nothing to serve yet.
        NotFoundError
            ``version`` never existed.
        """

    @property
    def display(self) -> LayerDisplay:
        """How the viewer draws this layer; subclasses refine it."""
        return LayerDisplay()

    def is_current(self, version: str) -> bool:
        """Whether ``version`` is still served (not superseded); layers serving several
        data at once (a collection's items) override it."""
        return self.version == version

    def outdated(self) -> bool:
        """Whether the current version is about to be replaced (newer inputs are being
        computed): its chunks then wait behind that computation."""
        return False

    def chunk_priority(self, level: int, box: Box) -> int:
        """Rank of a chunk's computation among its lane's (lower first): finer levels
        first; layers that know what a user watches refine it."""
        return level

    def add_listener(self, listener: LayerListener) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: LayerListener) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify_changed(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(self)
            except Exception:
                log.exception("layer listener failed for %s", self.layer_id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.layer_id!r} kind={self.kind} v={self.version!r}>"


def _default_display(kind: LayerKind, volume: MultiscaleVolume) -> LayerDisplay:
    if kind == "segmentation":
        return LayerDisplay()
    return image_display(volume)


class StaticLayer(ServedLayer):
    """An opened source: one fixed version.

    Parameters
    ----------
    layer_id, kind, name
        See :class:`ServedLayer`.
    volume
        The source's pyramid; missing coarse levels are added lazily (see
        :func:`ilastik_web.server.served_pyramid.complete_pyramid`).
    cache
        Cache for the computed pyramid levels.
    display
        How to draw it; by default a contrast range is estimated from a cheap sample
        (on first use) for images.
    location
        Where the source came from (path or URL), for listings.
    warnings
        What the user should know about the source (shown in the viewer), e.g. that
        its metadata had no voxel size.
    """

    VERSION = "v0"

    def __init__(
        self,
        layer_id: str,
        volume: MultiscaleVolume,
        *,
        kind: LayerKind = "image",
        name: str | None = None,
        cache: ArrayCache | None = None,
        display: LayerDisplay | None = None,
        location: str | None = None,
        warnings: tuple[str, ...] = (),
    ):
        super().__init__(layer_id, kind, name=name or volume.name or layer_id)
        self._volume = complete_pyramid(volume, kind=kind, cache=cache)
        self.location = location
        self.warnings = tuple(warnings)
        self._display = display
        self._display_lock = threading.Lock()

    @property
    def version(self) -> str:
        return self.VERSION

    def volume(self, version: str) -> MultiscaleVolume:
        if version != self.VERSION:
            raise NotFoundError(
                f"layer {self.layer_id!r} has only version {self.VERSION!r}, not {version!r}"
            )
        return self._volume

    @property
    def display(self) -> LayerDisplay:
        with self._display_lock:
            if self._display is None:
                self._display = _default_display(self.kind, self._volume)
            return self._display


class VersionedLayer(ServedLayer):
    """A layer whose data is replaced over time (predictions, labels).

    Starts not ready (503) until the first :meth:`publish`; each publish makes a new
    version current and every older one gone (410).

    Parameters
    ----------
    layer_id, kind, name
        See :class:`ServedLayer`.
    display
        How to draw it.
    """

    def __init__(
        self,
        layer_id: str,
        kind: LayerKind = "image",
        *,
        name: str | None = None,
        display: LayerDisplay | None = None,
    ):
        super().__init__(layer_id, kind, name=name)
        self._lock = threading.Lock()
        self._counter = 0
        self._version = "v0"
        self._volume: MultiscaleVolume | None = None
        self._display = display or LayerDisplay()

    @property
    def version(self) -> str:
        with self._lock:
            return self._version

    @property
    def display(self) -> LayerDisplay:
        with self._lock:
            return self._display

    def publish(
        self, volume: MultiscaleVolume, *, display: LayerDisplay | None = None
    ) -> str:
        """Make ``volume`` the current data under a new version, and return that version."""
        with self._lock:
            self._counter += 1
            self._version = f"v{self._counter}"
            self._volume = volume
            if display is not None:
                self._display = display
            version = self._version
        self._notify_changed()
        return version

    def volume(self, version: str) -> MultiscaleVolume:
        with self._lock:
            current, volume, counter = self._version, self._volume, self._counter
        if version == current:
            if volume is None:
                raise NotReadyError(f"layer {self.layer_id!r} has no data yet")
            return volume
        number = version[1:] if version.startswith("v") else ""
        if re.fullmatch(r"[0-9]{1,18}", number) and int(number) < counter:
            raise GoneError(
                f"version {version!r} of layer {self.layer_id!r} was superseded by {current!r}"
            )
        raise NotFoundError(f"layer {self.layer_id!r} has no version {version!r}")


#: Called with ("added" | "changed" | "removed", layer).
RegistryListener = Callable[[str, ServedLayer], None]


class LayerRegistry:
    """The layers one server serves, by id; thread-safe, owned by the app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._layers: dict[str, ServedLayer] = {}
        self._listeners: list[RegistryListener] = []

    def add(self, layer: ServedLayer) -> ServedLayer:
        """Register ``layer``; its id must be new."""
        with self._lock:
            if layer.layer_id in self._layers:
                raise InvalidRequestError(f"a layer with id {layer.layer_id!r} already exists")
            self._layers[layer.layer_id] = layer
        layer.add_listener(self._layer_changed)
        self._emit("added", layer)
        return layer

    def replace(self, layer: ServedLayer) -> ServedLayer:
        """Register ``layer``, replacing any layer with the same id."""
        with self._lock:
            old = self._layers.get(layer.layer_id)
            self._layers[layer.layer_id] = layer
        if old is not None:
            old.remove_listener(self._layer_changed)
        layer.add_listener(self._layer_changed)
        self._emit("changed" if old is not None else "added", layer)
        return layer

    def remove(self, layer_id: str) -> ServedLayer:
        with self._lock:
            layer = self._layers.pop(layer_id, None)
        if layer is None:
            raise NotFoundError(f"no layer {layer_id!r}")
        layer.remove_listener(self._layer_changed)
        self._emit("removed", layer)
        return layer

    def get(self, layer_id: str) -> ServedLayer:
        with self._lock:
            layer = self._layers.get(layer_id)
        if layer is None:
            raise NotFoundError(f"no layer {layer_id!r}")
        return layer

    def list(self) -> list[ServedLayer]:
        """All layers, in the order they were added."""
        with self._lock:
            return list(self._layers.values())

    def sources(self) -> list[StaticLayer]:
        """The layers that are opened sources."""
        return [layer for layer in self.list() if isinstance(layer, StaticLayer)]

    def __contains__(self, layer_id: object) -> bool:
        with self._lock:
            return layer_id in self._layers

    def __len__(self) -> int:
        with self._lock:
            return len(self._layers)

    def add_listener(self, listener: RegistryListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: RegistryListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _layer_changed(self, layer: ServedLayer) -> None:
        self._emit("changed", layer)

    def _emit(self, event: str, layer: ServedLayer) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event, layer)
            except Exception:
                log.exception("registry listener failed on %s %s", event, layer.layer_id)
