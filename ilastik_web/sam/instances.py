"""Instance annotations: each accepted SAM mask becomes one object with its own id.

Objects are kept as (box, mask) in acceptance order and painted into sparse uint32
blocks (a later object covers an earlier one where they overlap). With a directory each
object is also written as its own file (temporary file, fsync, rename), so an
acknowledged object survives a crash; reopening paints them again in id order.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.errors import InvalidRequestError, NotFoundError

log = logging.getLogger(__name__)

BlockIndex = tuple[int, int, int]


class InstanceStore:
    """Objects (id -> box and mask) over a volume of ``shape`` (z, y, x).

    Parameters
    ----------
    shape
        Spatial shape of level 0.
    directory
        Where objects are persisted; None keeps them in memory.
    block_shape
        Storage block shape of the painted id volume.
    """

    def __init__(self, shape: Sequence[int], directory: Path | None = None,
                 block_shape: Sequence[int] = (64, 64, 64)):
        self.shape = tuple(int(s) for s in shape)
        self.block_shape = tuple(int(b) for b in block_shape)
        self.directory = Path(directory) if directory is not None else None
        self._lock = threading.Lock()
        self._objects: dict[int, tuple[Box, np.ndarray]] = {}
        self._blocks: dict[BlockIndex, np.ndarray] = {}
        self._revision = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def object_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._objects)

    def add(self, box: Box, mask: np.ndarray) -> int:
        """Store a new object; return its id (1, 2, ...)."""
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != box.shape or not Box.from_shape(self.shape).contains(box):
            raise InvalidRequestError(f"object box {box} / mask {mask.shape} do not fit the "
                                      f"volume of shape {self.shape}")
        if not mask.any():
            raise InvalidRequestError("an object needs at least one voxel")
        mask.setflags(write=False)
        with self._lock:
            object_id = max(self._objects, default=0) + 1
            if self.directory is not None:
                _save_object(self.directory, object_id, box, mask)
            self._objects[object_id] = (box, mask)
            self._paint(object_id, box, mask)
            self._revision += 1
            return object_id

    def remove(self, object_id: int) -> None:
        with self._lock:
            if object_id not in self._objects:
                raise NotFoundError(f"no object {object_id}")
            box, _ = self._objects.pop(object_id)
            if self.directory is not None:
                (self.directory / f"{object_id:08d}.npz").unlink(missing_ok=True)
            indices = {i for i in _block_indices(box, self.block_shape)}
            for index in indices:
                self._blocks.pop(index, None)
            for other_id in sorted(self._objects):  # repaint what the removed one covered
                other_box, other_mask = self._objects[other_id]
                self._paint(other_id, other_box, other_mask, only=indices)
            self._revision += 1

    def snapshot(self) -> tuple[int, dict[BlockIndex, np.ndarray]]:
        """(revision, blocks) frozen now (blocks are copied on write, never changed)."""
        with self._lock:
            return self._revision, dict(self._blocks)

    def read(self, box: Box, blocks: dict[BlockIndex, np.ndarray] | None = None) -> np.ndarray:
        """uint32 object ids of ``box`` (0: background), now or of a :meth:`snapshot`."""
        if blocks is None:
            blocks = self.snapshot()[1]
        out = np.zeros(box.shape, dtype=np.uint32)
        for index in _block_indices(box, self.block_shape):
            block = blocks.get(index)
            if block is not None:
                block_box = _block_box(index, self.block_shape, self.shape)
                part = block_box.intersect(box)
                out[part.relative_to(box)] = block[part.relative_to(block_box)]
        return out

    def _paint(self, object_id: int, box: Box, mask: np.ndarray,
               only: set[BlockIndex] | None = None) -> None:
        for index in _block_indices(box, self.block_shape):
            if only is not None and index not in only:
                continue
            block_box = _block_box(index, self.block_shape, self.shape)
            part = block_box.intersect(box)
            hit = mask[part.relative_to(box)]
            if not hit.any():
                continue
            block = self._blocks.get(index)
            block = np.zeros(block_box.shape, np.uint32) if block is None else block.copy()
            block[part.relative_to(block_box)][hit] = object_id
            self._blocks[index] = block

    def _load(self) -> None:
        assert self.directory is not None
        for path in sorted(self.directory.glob("*.npz")):
            try:
                with np.load(path) as data:
                    box = Box(tuple(data["start"]), tuple(data["stop"]))
                    mask = np.unpackbits(data["bits"], count=box.size).astype(bool)
                object_id = int(path.stem)
            except Exception as exc:
                log.warning("skipping unreadable instance file %s: %s", path, exc)
                continue
            mask = mask.reshape(box.shape)
            self._objects[object_id] = (box, mask)
            self._paint(object_id, box, mask)
        self._revision = len(self._objects)


def _save_object(directory: Path, object_id: int, box: Box, mask: np.ndarray) -> None:
    tmp = directory / f".{object_id:08d}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, start=np.array(box.start), stop=np.array(box.stop),
                            bits=np.packbits(mask.ravel()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / f"{object_id:08d}.npz")


def _block_indices(box: Box, block_shape) -> list[BlockIndex]:
    out = []
    for cell in box.chunks(block_shape):
        if not cell.is_empty:
            out.append(tuple(s // b for s, b in zip(cell.start, block_shape, strict=True)))
    return out


def _block_box(index: BlockIndex, block_shape, shape) -> Box:
    start = tuple(i * b for i, b in zip(index, block_shape, strict=True))
    stop = tuple(min(s + b, n) for s, b, n in zip(start, block_shape, shape, strict=True))
    return Box(start, stop)


class InstanceVolume(LazyVolume):
    """One revision of an :class:`InstanceStore` as a uint32 lazy volume."""

    def __init__(self, store: InstanceStore, voxel_size: tuple[float, float, float], key: str):
        self.store = store
        self.revision, self._blocks = store.snapshot()
        self._voxel_size = voxel_size
        self._key = key

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.store.shape  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self._voxel_size

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        return self.store.block_shape  # type: ignore[return-value]

    @property
    def key(self) -> str:
        return self._key

    def _read(self, box: Box) -> np.ndarray:
        return self.store.read(box, self._blocks)[None]
