"""A sparse, crash-safe label volume with undo.

Labels live in uint8 blocks created on first paint. Every edit is appended to a log and
fsync'd before the call returns, so an acknowledged edit survives ``kill -9``; reopening
replays the log on top of the last checkpoint. Blocks are copy-on-write, which makes a
snapshot of one revision (for serving or training) a cheap dictionary copy.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels.rasterize import Stroke, rasterize

log = logging.getLogger(__name__)

BlockIndex = tuple[int, int, int]
LOG_NAME = "edits.log"
CHECKPOINT_NAME = "checkpoint.npz"


#: Largest mask edit, in voxels of its box.
MAX_MASK_VOXELS = 1 << 30


@dataclass(frozen=True, eq=False)
class MaskEdit:
    """Set the voxels of a boolean ``mask`` (shaped like ``box``, (z, y, x)) to ``label``."""

    box: Box
    mask: np.ndarray
    label: int

    def __post_init__(self) -> None:
        if self.box.ndim != 3:
            raise InvalidRequestError(f"a mask edit needs a 3D (z, y, x) box, got {self.box}")
        if self.box.size > MAX_MASK_VOXELS:
            raise InvalidRequestError(f"a mask edit covers at most {MAX_MASK_VOXELS} voxels")
        mask = np.asarray(self.mask)
        if mask.shape != self.box.shape:
            raise InvalidRequestError(f"mask shape {mask.shape} differs from its box {self.box}")
        if not (0 <= int(self.label) <= 255):
            raise InvalidRequestError("label must be 0 (eraser) or a class value 1..255")
        mask = np.ascontiguousarray(mask, dtype=bool)
        mask.setflags(write=False)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "label", int(self.label))

    def to_json(self) -> dict:
        bits = zlib.compress(np.packbits(self.mask.ravel()).tobytes(), 6)
        return {"box": [list(self.box.start), list(self.box.stop)], "label": self.label,
                "bits": base64.b64encode(bits).decode("ascii")}

    @classmethod
    def from_json(cls, data: dict) -> MaskEdit:
        box = Box(tuple(data["box"][0]), tuple(data["box"][1]))
        packed = np.frombuffer(zlib.decompress(base64.b64decode(data["bits"])), dtype=np.uint8)
        mask = np.unpackbits(packed, count=box.size).astype(bool).reshape(box.shape)
        return cls(box, mask, data["label"])


@dataclass(frozen=True)
class Edit:
    """One undoable edit: a stroke, a mask, or a relabelling of one class value to another."""

    revision: int
    stroke: Stroke | None = None
    relabel: tuple[int, int] | None = None
    mask: MaskEdit | None = None
    #: Who made it (undo and redo by an author act on that author's edits only).
    author: str | None = None

    def to_json(self) -> dict:
        by = {} if self.author is None else {"author": self.author}
        if self.stroke is not None:
            return {"op": "stroke", "rev": self.revision, "stroke": self.stroke.to_json(), **by}
        if self.mask is not None:
            return {"op": "mask", "rev": self.revision, **self.mask.to_json(), **by}
        assert self.relabel is not None
        old, new = self.relabel
        return {"op": "relabel", "rev": self.revision, "from": old, "to": new, **by}


@dataclass(frozen=True)
class EditResult:
    """What an edit changed: the new revision and the voxel box touched (maybe empty)."""

    revision: int
    box: Box


class LabelSnapshot:
    """An immutable view of the labels at one revision."""

    def __init__(self, shape: tuple[int, int, int], block_shape: tuple[int, int, int],
                 blocks: dict[BlockIndex, np.ndarray], revision: int):
        self.shape = shape
        self.block_shape = block_shape
        self._blocks = blocks
        self.revision = revision

    def read(self, box: Box) -> np.ndarray:
        """uint8 labels of ``box`` (z, y, x); 0 where nothing was painted."""
        out = np.zeros(box.shape, dtype=np.uint8)
        for index in _block_indices(box, self.block_shape):
            block = self._blocks.get(index)
            if block is None:
                continue
            block_box = _block_box(index, self.block_shape, self.shape)
            part = block_box.intersect(box)
            out[part.relative_to(box)] = block[part.relative_to(block_box)]
        return out

    def labelled_blocks(self) -> Iterator[tuple[Box, np.ndarray]]:
        """(box, labels) of every block that holds at least one label."""
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.any():
                yield _block_box(index, self.block_shape, self.shape), block

    def counts(self) -> dict[int, int]:
        """Voxel count per class value (0 excluded)."""
        total = np.zeros(256, dtype=np.int64)
        for block in self._blocks.values():
            total += np.bincount(block.ravel(), minlength=256)
        return {int(v): int(n) for v, n in enumerate(total) if v and n}


class LabelStore:
    """Sparse uint8 labels for a volume of ``shape`` (z, y, x), persisted in ``directory``.

    Parameters
    ----------
    shape
        Spatial shape of pyramid level 0.
    directory
        Where the edit log and checkpoint live; None keeps labels in memory only.
    block_shape
        Storage block shape (z, y, x).
    """

    def __init__(self, shape: Sequence[int], directory: Path | None = None,
                 block_shape: Sequence[int] = (64, 64, 64)):
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.block_shape = (int(block_shape[0]), int(block_shape[1]), int(block_shape[2]))
        self.directory = Path(directory) if directory is not None else None
        self._lock = threading.RLock()
        self._base: dict[BlockIndex, np.ndarray] = {}
        self._blocks: dict[BlockIndex, np.ndarray] = {}
        self._base_revision = 0
        self._revision = 0
        self._active: list[Edit] = []
        self._undone: list[Edit] = []
        self._log_file: io.BufferedWriter | None = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()
            self._log_file = open(self.directory / LOG_NAME, "ab")  # noqa: SIM115

    # -- public API -------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    def paint(self, stroke: Stroke, author: str | None = None) -> EditResult:
        """Apply a stroke (label 0 erases) by ``author``; durable once this returns.

        Strokes are applied in the order they are acknowledged: where two overlap, the
        later one wins, and the log keeps both.
        """
        with self._lock:
            edit = Edit(self._revision + 1, stroke=stroke, author=author)
            self._append(edit.to_json())
            box = self._apply_stroke(stroke)
            self._active.append(edit)
            self._forget_redo(author)
            self._revision = edit.revision
            return EditResult(self._revision, box)

    def paint_mask(self, box: Box, mask: np.ndarray, label: int,
                   author: str | None = None) -> EditResult:
        """Set the voxels where ``mask`` (shaped like ``box``) is True to ``label`` (0 erases).

        Like a stroke: durable once this returns, undoable, replayed on reopen. The box
        must lie inside the volume.
        """
        edit_mask = MaskEdit(box, mask, label)
        if not Box.from_shape(self.shape).contains(box):
            raise InvalidRequestError(f"mask box {box} is outside the labels of shape {self.shape}")
        with self._lock:
            edit = Edit(self._revision + 1, mask=edit_mask, author=author)
            self._append(edit.to_json())
            touched = self._apply_mask(edit_mask)
            self._active.append(edit)
            self._forget_redo(author)
            self._revision = edit.revision
            return EditResult(self._revision, touched)

    def relabel(self, old: int, new: int) -> EditResult:
        """Change every voxel labelled ``old`` to ``new`` (0 removes a class's labels)."""
        if not (1 <= old <= 255 and 0 <= new <= 255):
            raise InvalidRequestError("relabel needs old in 1..255 and new in 0..255")
        with self._lock:
            edit = Edit(self._revision + 1, relabel=(old, new))
            self._append(edit.to_json())
            box = self._apply_relabel(old, new)
            self._active.append(edit)
            self._undone.clear()
            self._revision = edit.revision
            return EditResult(self._revision, box)

    def undo(self, author: str | None = None) -> EditResult | None:
        """Take back the latest edit still in effect (by ``author``, when given); None
        when there is none. Later edits of others stay in effect."""
        with self._lock:
            index = self._latest(self._active, author)
            if index is None:
                return None
            self._revision += 1
            edit = self._active[index]
            self._append({"op": "undo", "rev": self._revision, "of": edit.revision})
            del self._active[index]
            self._undone.append(edit)
            return EditResult(self._revision, self._replay_region(edit))

    def redo(self, author: str | None = None) -> EditResult | None:
        """Re-apply the latest undone edit (by ``author``, when given); None when there is
        none. It applies on top of everything in effect, like a new edit."""
        with self._lock:
            index = self._latest(self._undone, author)
            if index is None:
                return None
            self._revision += 1
            edit = self._undone[index]
            self._append({"op": "redo", "rev": self._revision, "of": edit.revision})
            del self._undone[index]
            self._active.append(edit)
            return EditResult(self._revision, self._reapply(edit))

    def can_undo_by(self, author: str | None) -> bool:
        return self._latest(self._active, author) is not None

    def can_redo_by(self, author: str | None) -> bool:
        return self._latest(self._undone, author) is not None

    @staticmethod
    def _latest(edits: list[Edit], author: str | None) -> int | None:
        for index in range(len(edits) - 1, -1, -1):
            if author is None or edits[index].author == author:
                return index
        return None

    def _forget_redo(self, author: str | None) -> None:
        """A new edit ends its author's redo history (everyone's, for no author)."""
        self._undone[:] = [] if author is None else [e for e in self._undone
                                                     if e.author != author]

    def _take(self, edits: list[Edit], record: dict) -> Edit:
        """Remove the edit an undo/redo record names (the latest, in older logs)."""
        if "of" not in record:
            return edits.pop()
        index = next(i for i, e in enumerate(edits) if e.revision == record["of"])
        return edits.pop(index)

    def snapshot(self) -> LabelSnapshot:
        with self._lock:
            return LabelSnapshot(self.shape, self.block_shape, dict(self._blocks), self._revision)

    def read(self, box: Box) -> np.ndarray:
        return self.snapshot().read(box)

    @property
    def can_undo(self) -> bool:
        return bool(self._active)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def checkpoint(self) -> None:
        """Write all blocks atomically and start an empty log (undo history ends here)."""
        if self.directory is None:
            return
        with self._lock:
            arrays = {"__revision__": np.array([self._revision], dtype=np.int64)}
            for (z, y, x), block in self._blocks.items():
                if block.any():
                    arrays[f"{z}_{y}_{x}"] = block
            tmp = self.directory / (CHECKPOINT_NAME + ".tmp")
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / CHECKPOINT_NAME)
            # The log's entries are all in the checkpoint now; a crash before the log is
            # replaced is harmless because replay skips revisions the checkpoint holds.
            assert self._log_file is not None
            self._log_file.close()
            empty = self.directory / (LOG_NAME + ".tmp")
            with open(empty, "wb") as f:
                os.fsync(f.fileno())
            os.replace(empty, self.directory / LOG_NAME)
            _fsync_dir(self.directory)
            self._log_file = open(self.directory / LOG_NAME, "ab")  # noqa: SIM115
            self._base = dict(self._blocks)
            self._base_revision = self._revision
            self._active.clear()
            self._undone.clear()

    def close(self) -> None:
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    # -- persistence ------------------------------------------------------------------

    def _append(self, record: dict) -> None:
        if self._log_file is None:
            return
        self._log_file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._log_file.flush()
        os.fsync(self._log_file.fileno())

    def _load(self) -> None:
        assert self.directory is not None
        checkpoint = self.directory / CHECKPOINT_NAME
        if checkpoint.exists():
            with np.load(checkpoint) as data:
                self._base_revision = int(data["__revision__"][0])
                for name in data.files:
                    if name != "__revision__":
                        z, y, x = (int(v) for v in name.split("_"))
                        self._base[(z, y, x)] = data[name]
            self._blocks = dict(self._base)
        self._revision = self._base_revision
        log_path = self.directory / LOG_NAME
        if not log_path.exists():
            return
        replayed = 0
        with open(log_path, "rb") as f:
            lines = f.read().split(b"\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # Only the last line can be torn (a crash mid-write, never acknowledged).
                if any(rest.strip() for rest in lines[number + 1 :]):
                    raise
                log.warning("ignoring a torn last line in %s", log_path)
                break
            if record["rev"] <= self._revision:
                continue
            self._replay_record(record)
            replayed += 1
        log.info("labels: replayed %d edits, revision %d", replayed, self._revision)

    def _replay_record(self, record: dict) -> None:
        op = record["op"]
        author = record.get("author")
        if op == "stroke":
            edit = Edit(record["rev"], stroke=Stroke.from_json(record["stroke"]), author=author)
            self._apply_stroke(edit.stroke)  # type: ignore[arg-type]
            self._active.append(edit)
            self._forget_redo(author)
        elif op == "mask":
            edit = Edit(record["rev"], mask=MaskEdit.from_json(record), author=author)
            self._apply_mask(edit.mask)  # type: ignore[arg-type]
            self._active.append(edit)
            self._forget_redo(author)
        elif op == "relabel":
            edit = Edit(record["rev"], relabel=(record["from"], record["to"]))
            self._apply_relabel(record["from"], record["to"])
            self._active.append(edit)
            self._undone.clear()
        elif op == "undo":
            edit = self._take(self._active, record)
            self._undone.append(edit)
            self._replay_region(edit)
        elif op == "redo":
            edit = self._take(self._undone, record)
            self._active.append(edit)
            self._reapply(edit)
        else:
            raise ValueError(f"unknown label log op {op!r}")
        self._revision = record["rev"]

    # -- block edits --------------------------------------------------------------------

    def _apply_stroke(self, stroke: Stroke, only: set[BlockIndex] | None = None) -> Box:
        box = stroke.bounding_box(self.shape)
        if box.is_empty:
            return box
        for index in _block_indices(box, self.block_shape):
            if only is not None and index not in only:
                continue
            block_box = _block_box(index, self.block_shape, self.shape)
            part = block_box.intersect(box)
            mask = rasterize(stroke, part)
            if not mask.any():
                continue
            block = self._blocks.get(index)
            if block is None:
                if stroke.label == 0:
                    continue
                block = np.zeros(block_box.shape, dtype=np.uint8)
            else:
                block = block.copy()
            block[part.relative_to(block_box)][mask] = stroke.label
            block.setflags(write=False)
            self._blocks[index] = block
        return box

    def _apply_mask(self, edit: MaskEdit, only: set[BlockIndex] | None = None) -> Box:
        hit_box = Box.of_mask(edit.mask).translate(edit.box.start)
        if hit_box.is_empty:
            return hit_box
        for index in _block_indices(hit_box, self.block_shape):
            if only is not None and index not in only:
                continue
            block_box = _block_box(index, self.block_shape, self.shape)
            part = block_box.intersect(hit_box)
            mask = edit.mask[part.relative_to(edit.box)]
            if not mask.any():
                continue
            block = self._blocks.get(index)
            if block is None:
                if edit.label == 0:
                    continue
                block = np.zeros(block_box.shape, dtype=np.uint8)
            else:
                block = block.copy()
            block[part.relative_to(block_box)][mask] = edit.label
            block.setflags(write=False)
            self._blocks[index] = block
        return hit_box

    def _apply_relabel(self, old: int, new: int, only: set[BlockIndex] | None = None) -> Box:
        touched: list[Box] = []
        for index, block in list(self._blocks.items()):
            if only is not None and index not in only:
                continue
            hit = block == old
            if hit.any():
                block = block.copy()
                block[hit] = new
                block.setflags(write=False)
                self._blocks[index] = block
                touched.append(_block_box(index, self.block_shape, self.shape))
        return _union(touched)

    def _edit_blocks(self, edit: Edit) -> set[BlockIndex]:
        if edit.stroke is not None:
            return set(_block_indices(edit.stroke.bounding_box(self.shape), self.block_shape))
        if edit.mask is not None:
            return set(_block_indices(edit.mask.box, self.block_shape))
        return set(self._blocks) | set(self._base)

    def _replay_region(self, removed: Edit) -> Box:
        """Recompute the blocks ``removed`` touched from the base and the edits in effect."""
        indices = self._edit_blocks(removed)
        for index in indices:
            if index in self._base:
                self._blocks[index] = self._base[index]
            else:
                self._blocks.pop(index, None)
        for edit in self._active:
            self._reapply(edit, only=indices)
        return _union([_block_box(i, self.block_shape, self.shape) for i in indices])

    def _reapply(self, edit: Edit, only: set[BlockIndex] | None = None) -> Box:
        if edit.stroke is not None:
            return self._apply_stroke(edit.stroke, only=only)
        if edit.mask is not None:
            return self._apply_mask(edit.mask, only=only)
        assert edit.relabel is not None
        return self._apply_relabel(*edit.relabel, only=only)


def _block_indices(box: Box, block_shape: tuple[int, int, int]) -> Iterator[BlockIndex]:
    for cell in box.chunks(block_shape):
        if not cell.is_empty:
            yield (
                cell.start[0] // block_shape[0],
                cell.start[1] // block_shape[1],
                cell.start[2] // block_shape[2],
            )


def _block_box(index: BlockIndex, block_shape: tuple[int, int, int],
               shape: tuple[int, int, int]) -> Box:
    start = tuple(i * b for i, b in zip(index, block_shape, strict=True))
    stop = tuple(min(s + b, n) for s, b, n in zip(start, block_shape, shape, strict=True))
    return Box(start, stop)


def _union(boxes: list[Box]) -> Box:
    if not boxes:
        return Box((0, 0, 0), (0, 0, 0))
    start = tuple(min(b.start[a] for b in boxes) for a in range(3))
    stop = tuple(max(b.stop[a] for b in boxes) for a in range(3))
    return Box(start, stop)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
