"""An image collection served as three layers whose versions name the item (web adapter).

One layer id serves every item: ``collection`` (the images), ``collection-objects`` (the
instance annotations) and ``collection-prediction`` (the pixel classifier trained across
items). A version names the item, and for objects and predictions also the revision or
classifier generation, so chunk URLs never change meaning. Each viewer switches items by
pointing its layers at another version; nothing is pushed to other viewers, who may well
be on other items (so these layers never notify the registry of a change).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.collections import Collection
from ilastik_web.collections.pixel import CollectionClassifier
from ilastik_web.errors import GoneError, NotFoundError, NotReadyError
from ilastik_web.pyramid import build_pyramid
from ilastik_web.sam.instances import InstanceVolume
from ilastik_web.server.display import LayerDisplay, class_colors, image_display
from ilastik_web.server.layers import ServedLayer
from ilastik_web.server.served_pyramid import complete_pyramid

IMAGE_LAYER = "collection"
OBJECTS_LAYER = "collection-objects"
PREDICTION_LAYER = "collection-prediction"
#: Pyramids of this many items are kept built per layer.
_KEEP = 16
_IMAGE = re.compile(r"c([0-9]{1,9})-([0-9a-f]{8})")
_OBJECTS = re.compile(r"o([0-9]{1,9})r([0-9]{1,18})-([0-9a-f]{8})")
_PREDICTION = re.compile(r"p([0-9]{1,9})g([0-9]{1,18})-([0-9a-f]{8})")


class _Built:
    """A small LRU of built pyramids."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, MultiscaleVolume] = OrderedDict()

    def get(self, key: tuple, build: Callable[[], MultiscaleVolume]) -> MultiscaleVolume:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        built = build()
        with self._lock:
            self._items[key] = built
            while len(self._items) > _KEEP:
                self._items.popitem(last=False)
        return built


class _CollectionLayer(ServedLayer):
    def __init__(self, layer_id: str, kind, collection: Collection, cache: ArrayCache,
                 uid: str):
        super().__init__(layer_id, kind, name=layer_id)
        self.collection = collection
        self.cache = cache
        self.uid = uid
        self._built = _Built()

    def _item_at(self, index_text: str, uid: str):
        index = int(index_text)
        if uid != self.uid or index >= len(self.collection.items):
            raise NotFoundError(f"no item {index} in layer {self.layer_id!r}")
        return self.collection.items[index]

    @property
    def version(self) -> str:
        return self.version_of(self.collection.items[0].item_id)

    def version_of(self, item_id: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class CollectionImageLayer(_CollectionLayer):
    """The items' images; version ``c<index>-<uid>``."""

    def __init__(self, collection: Collection, cache: ArrayCache, uid: str):
        super().__init__(IMAGE_LAYER, "image", collection, cache, uid)
        self._display: LayerDisplay | None = None

    def version_of(self, item_id: str) -> str:
        return f"c{self.collection.item(item_id).index}-{self.uid}"

    def is_current(self, version: str) -> bool:
        return _IMAGE.fullmatch(version) is not None  # an item's image never changes

    def item_of(self, version: str) -> str:
        match = _IMAGE.fullmatch(version)
        if match is None:
            raise NotFoundError(f"unknown version {version!r} of {self.layer_id!r}")
        return self._item_at(match[1], match[2]).item_id

    def volume(self, version: str) -> MultiscaleVolume:
        item_id = self.item_of(version)
        return self._built.get((item_id,), lambda: complete_pyramid(
            self.collection.open(item_id), kind="image", cache=self.cache))

    @property
    def display(self) -> LayerDisplay:
        if self._display is None:
            self._display = image_display(self.volume(self.version))
        return self._display


class CollectionObjectsLayer(_CollectionLayer):
    """The items' instance objects; version ``o<index>r<revision>-<uid>`` (a superseded
    revision answers 410)."""

    def __init__(self, collection: Collection, cache: ArrayCache, uid: str):
        super().__init__(OBJECTS_LAYER, "segmentation", collection, cache, uid)

    def version_of(self, item_id: str) -> str:
        item = self.collection.item(item_id)
        revision = self.collection.objects(item.item_id).revision
        return f"o{item.index}r{revision}-{self.uid}"

    def parse(self, version: str) -> tuple[str, int]:
        """The item and objects revision a version names."""
        match = _OBJECTS.fullmatch(version)
        if match is None:
            raise NotFoundError(f"unknown version {version!r} of {self.layer_id!r}")
        return self._item_at(match[1], match[3]).item_id, int(match[2])

    def is_current(self, version: str) -> bool:
        try:
            item_id, revision = self.parse(version)
        except NotFoundError:
            return False
        return revision == self.collection.objects(item_id).revision

    def volume(self, version: str) -> MultiscaleVolume:
        item_id, revision = self.parse(version)
        objects = self.collection.objects(item_id)
        current = objects.revision
        if revision < current:
            raise GoneError(f"objects revision {revision} of {item_id!r} was superseded by "
                            f"{current}")
        if revision > current:
            raise NotFoundError(f"objects revision {revision} of {item_id!r} does not exist")
        voxel_size = self.collection.open(item_id).base.voxel_size

        def build() -> MultiscaleVolume:
            base = InstanceVolume(objects.store, voxel_size,
                                  key=f"{self.layer_id}-{self.uid}/{item_id}/r{revision}")
            return build_pyramid(base, cache=self.cache, name=self.layer_id, method="mode")

        return self._built.get((item_id, revision), build)

    @property
    def display(self) -> LayerDisplay:
        return LayerDisplay(opacity=0.6)


class CollectionPredictionLayer(_CollectionLayer):
    """The classifier trained across items, predicting each item (its most probable
    class); version ``p<index>g<generation>-<uid>``, 503 before the first training."""

    def __init__(self, collection: Collection, cache: ArrayCache, uid: str,
                 classifier: Callable[[], CollectionClassifier | None]):
        super().__init__(PREDICTION_LAYER, "segmentation", collection, cache, uid)
        self._classifier = classifier

    def _generation(self) -> int:
        trained = self._classifier()
        return trained.generation if trained is not None else 0

    def version_of(self, item_id: str) -> str:
        return f"p{self.collection.item(item_id).index}g{self._generation()}-{self.uid}"

    def _parse(self, version: str) -> tuple[str, int]:
        match = _PREDICTION.fullmatch(version)
        if match is None:
            raise NotFoundError(f"unknown version {version!r} of {self.layer_id!r}")
        return self._item_at(match[1], match[3]).item_id, int(match[2])

    def is_current(self, version: str) -> bool:
        try:
            return self._parse(version)[1] == self._generation()
        except NotFoundError:
            return False

    def volume(self, version: str) -> MultiscaleVolume:
        item_id, generation = self._parse(version)
        trained = self._classifier()
        current = trained.generation if trained is not None else 0
        if generation < current:
            raise GoneError(f"classifier generation {generation} was superseded by {current}")
        if trained is None or generation > current:
            raise NotReadyError("no classifier yet: annotate items and train")
        return self._built.get((item_id, generation), lambda: trained.pyramids(
            self.collection.open(item_id), self.cache)["segmentation"])

    @property
    def display(self) -> LayerDisplay:
        trained = self._classifier()
        count = len(trained.class_names) if trained is not None else 2
        return LayerDisplay(segment_colors=class_colors(count), opacity=0.4, visible=False)
