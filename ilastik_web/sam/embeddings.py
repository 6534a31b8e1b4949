"""SAM image embeddings of volume slices, computed once and cached in memory and on disk.

A slice larger than the model input is cut into overlapping tiles
(:func:`~ilastik_web.sam.geometry.tiles_of`), each embedded on its own. The tiles of one
slice are stored together as a float32 array (tiles, channels, h, w).

Two caches: an in-memory :class:`~ilastik_web.cache.ArrayCache` keyed by (volume,
slice, model, tiling), which also makes concurrent requests for one embedding share a
single computation; and an optional on-disk zarr cache keyed by the hashes of the slice's
pixels and of the model checkpoint, so embeddings survive restarts and are shared by
every volume with the same content.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilastik_web.abc import LazyVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.geometry import SliceRef, Tile, tiles_of
from ilastik_web.sam.models import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_HALO = 64


def slice_image(volume: LazyVolume, ref: SliceRef) -> np.ndarray:
    """The slice as a (rows, columns, 3) uint8 RGB image, the way SAM takes it.

    One channel is repeated to three, two get an empty third, more than three keep the
    first three; each channel is stretched to 0..255 between its minimum and maximum.
    """
    data = ref.to_image(volume.read(ref.box)).astype(np.float32)  # (c, rows, cols)
    c = data.shape[0]
    if c == 1:
        data = np.repeat(data, 3, axis=0)
    elif c == 2:
        data = np.concatenate([data, np.zeros_like(data[:1])])
    elif c > 3:
        data = data[:3]
    lo = data.min(axis=(1, 2), keepdims=True)
    span = data.max(axis=(1, 2), keepdims=True) - lo
    scaled = (data - lo) / np.where(span > 0, span, 1.0) * 255.0
    return np.ascontiguousarray(np.round(scaled).astype(np.uint8).transpose(1, 2, 0))


def content_hash(image: np.ndarray) -> str:
    import xxhash

    digest = xxhash.xxh3_128()
    digest.update(repr((image.shape, image.dtype.str)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass(frozen=True)
class SliceEmbedding:
    """The embeddings of one slice: tiles and one (1, C, h, w) feature map per tile."""

    ref: SliceRef
    model_name: str
    tiles: tuple[Tile, ...]
    features: np.ndarray  # (tiles, C, h, w) float32, read-only
    computed: bool  # False when it came from a cache


@dataclass(frozen=True)
class EmbeddingStats:
    computed: int
    disk_hits: int
    memory_hits: int
    memory_bytes: int


class EmbeddingStore:
    """Embeddings per (volume, slice, model), computed at most once at a time.

    Parameters
    ----------
    memory_bytes
        Budget of the in-memory cache.
    directory
        Root of the on-disk zarr cache; None keeps embeddings in memory only.
    tile_size
        Largest tile side; default: each model's input size (1024 for released models).
    halo
        Context around each tile's inner region, in pixels.
    disk_bytes
        Size limit of the on-disk cache; beyond it the least recently used entries are
        removed (use is the time an entry was last written or read). None: no limit.
    """

    def __init__(self, memory_bytes: int = 1 << 30, directory: Path | None = None, *,
                 tile_size: int | None = None, halo: int = DEFAULT_HALO,
                 disk_bytes: int | None = None):
        self.memory = ArrayCache(memory_bytes)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        if disk_bytes is not None and int(disk_bytes) <= 0:
            raise InvalidRequestError("disk_bytes must be positive")
        self.disk_bytes = int(disk_bytes) if disk_bytes is not None else None
        self._evicted = 0
        self.tile_size = tile_size
        self.halo = int(halo)
        self._lock = threading.Lock()
        self._computed = 0
        self._disk_hits = 0

    def tiling(self, model: LoadedModel) -> tuple[int, int]:
        return (self.tile_size or model.image_size, self.halo)

    def tiles(self, ref: SliceRef, model: LoadedModel) -> list[Tile]:
        tile_size, halo = self.tiling(model)
        return tiles_of(ref.image_shape, tile_size, halo)

    def cached(self, volume: LazyVolume, ref: SliceRef, model: LoadedModel) -> bool:
        """True when the slice's embedding is in memory (no computation needed)."""
        return self.memory.get(self._memory_key(volume, ref, model)) is not None

    def get(self, volume: LazyVolume, ref: SliceRef, model: LoadedModel,
            should_stop: Callable[[], bool] = lambda: False) -> SliceEmbedding:
        """The slice's embedding, from memory, from disk, or computed now."""
        tiles = self.tiles(ref, model)
        key = self._memory_key(volume, ref, model)
        computed = []

        def compute() -> np.ndarray:
            features, fresh = self._load_or_compute(volume, ref, model, tiles, should_stop)
            computed.append(fresh)
            return features

        features = self.memory.get_or_compute(key, compute)
        return SliceEmbedding(ref, model.spec.name, tuple(tiles), features,
                              computed=bool(computed and computed[0]))

    @property
    def stats(self) -> EmbeddingStats:
        memory = self.memory.stats
        with self._lock:
            return EmbeddingStats(self._computed, self._disk_hits, memory.hits, memory.nbytes)

    def _memory_key(self, volume: LazyVolume, ref: SliceRef, model: LoadedModel) -> tuple:
        return (volume.key, ref.plane, ref.index, model.model_hash, self.tiling(model))

    def _disk_path(self, image_hash: str, model: LoadedModel) -> Path | None:
        if self.directory is None:
            return None
        tile_size, halo = self.tiling(model)
        return (self.directory / model.model_hash[:32]
                / f"{image_hash}-t{tile_size}-h{halo}.zarr")

    def _load_or_compute(self, volume: LazyVolume, ref: SliceRef, model: LoadedModel,
                         tiles: list[Tile], should_stop: Callable[[], bool]
                         ) -> tuple[np.ndarray, bool]:
        image = slice_image(volume, ref)
        path = self._disk_path(content_hash(image), model)
        if path is not None and path.exists():
            try:
                features = _read_zarr(path)
                if features.shape[0] == len(tiles):
                    _touch(path)
                    with self._lock:
                        self._disk_hits += 1
                    return features, False
                log.warning("ignoring %s: %d tiles, expected %d", path, features.shape[0],
                            len(tiles))
            except Exception as exc:  # a corrupt entry is recomputed, never fatal
                log.warning("ignoring unreadable embedding cache entry %s: %s", path, exc)
        features = embed_tiles(model, image, tiles, should_stop)
        with self._lock:
            self._computed += 1
        if path is not None:
            _write_zarr_atomic(path, features)
            if self.disk_bytes is not None:
                self.evict(keep=path)
        return features, True

    def disk_usage(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of each on-disk entry."""
        if self.directory is None:
            return []
        entries = []
        for path in self.directory.glob("*/*.zarr"):
            try:
                used = path.stat().st_mtime
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            except OSError:  # removed meanwhile (another process evicting)
                continue
            entries.append((used, size, path))
        return entries

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the cache fits ``disk_bytes``;
        returns how many were removed. ``keep`` (the entry just written) stays."""
        if self.disk_bytes is None or self.directory is None:
            return 0
        with self._lock:  # one eviction pass at a time in this process
            entries = sorted(self.disk_usage())
            total = sum(size for _, size, _ in entries)
            removed = 0
            for _, size, path in entries:
                if total <= self.disk_bytes:
                    break
                if keep is not None and path == keep:
                    continue
                shutil.rmtree(path, ignore_errors=True)
                total -= size
                removed += 1
            self._evicted += removed
        if removed:
            log.info("evicted %d SAM embeddings from %s (limit %d bytes)", removed,
                     self.directory, self.disk_bytes)
        return removed


class Cancelled(Exception):
    """A background computation was asked to stop."""


def embed_tiles(model: LoadedModel, image: np.ndarray, tiles: list[Tile],
                should_stop: Callable[[], bool] = lambda: False) -> np.ndarray:
    """SAM image features of each tile of an RGB uint8 image, stacked (tiles, C, h, w)."""
    import torch

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidRequestError("SAM embeds (rows, columns, 3) uint8 images")
    out = []
    with torch.inference_mode():
        for tile in tiles:
            if should_stop():
                raise Cancelled("embedding cancelled")
            predictor = model.predictor()
            predictor.set_image(np.ascontiguousarray(image[tile.outer.slices]))
            out.append(predictor.features[0].float().cpu().numpy())
    return np.stack(out)


def _touch(path: Path) -> None:
    """Mark an entry as used now (the LRU order of the disk cache)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _read_zarr(path: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(str(path), mode="r")[...], dtype=np.float32)


def _write_zarr_atomic(path: Path, features: np.ndarray) -> None:
    """Write to a temporary folder, then rename it into place (readers never see half)."""
    import zarr

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        array = zarr.create_array(str(tmp), shape=features.shape, dtype=np.float32,
                                  chunks=(1, *features.shape[1:]))
        array[...] = features
        os.replace(tmp, path)
    except OSError as exc:
        if path.exists():  # another process stored the same embedding first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not store embedding %s: %s", path, exc)
