"""A sparse, crash-safe label volume with undo.

Labels live in uint8 blocks created on first paint. Every edit is validated and computed,
then appended to a log and fsync'd before it takes effect and the call returns, so an
acknowledged edit survives ``kill -9`` and a failed write changes nothing; reopening
replays the log on top of the last checkpoint. Blocks are copy-on-write, which makes a
snapshot of one revision (for serving or training) a cheap dictionary copy.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError, StorageError
from ilastik_web.labels.rasterize import (
    MAX_STROKE_VOXELS,
    Stroke,
    check_label,
    rasterize,
    stroke_cost,
)

log = logging.getLogger(__name__)

BlockIndex = tuple[int, int, int]
LOG_NAME = "edits.log"
CHECKPOINT_NAME = "checkpoint.npz"


#: Largest mask edit, in voxels of its box.
MAX_MASK_VOXELS = 1 << 30
#: Edits kept undoable (older ones become part of the base labels).
MAX_UNDO = 100
#: Log records between automatic checkpoints.
CHECKPOINT_EVERY = 256


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
        label = check_label(self.label)
        mask = np.ascontiguousarray(mask, dtype=bool)
        mask.setflags(write=False)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "label", label)

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
    """One undoable edit: a stroke, a mask, or a relabelling of one class value to another.

    ``meta`` is carried in the log with the edit and comes back with it (a deleted class's
    name and colour, so undoing the deletion can restore the class).
    """

    revision: int
    stroke: Stroke | None = None
    relabel: tuple[int, int] | None = None
    mask: MaskEdit | None = None
    meta: dict | None = None
    #: Who made it (undo and redo by an author act on that author's edits only).
    author: str | None = None

    def to_json(self) -> dict:
        extra = {"meta": self.meta} if self.meta else {}
        if self.author is not None:
            extra["author"] = self.author
        if self.stroke is not None:
            return {"op": "stroke", "rev": self.revision, "stroke": self.stroke.to_json(),
                    **extra}
        if self.mask is not None:
            return {"op": "mask", "rev": self.revision, **self.mask.to_json(), **extra}
        assert self.relabel is not None
        old, new = self.relabel
        return {"op": "relabel", "rev": self.revision, "from": old, "to": new, **extra}

    @classmethod
    def from_json(cls, record: dict) -> Edit:
        """The edit of a log record (op stroke, mask or relabel); InvalidRequestError if bad."""
        if not isinstance(record, dict):
            raise InvalidRequestError("an edit record must be an object")
        rev, op, meta = record.get("rev"), record.get("op"), record.get("meta")
        author = record.get("author")
        if not isinstance(rev, int) or isinstance(rev, bool) or rev < 1:
            raise InvalidRequestError(f"bad revision {rev!r}")
        if meta is not None and not isinstance(meta, dict):
            raise InvalidRequestError("edit meta must be an object")
        if author is not None and not isinstance(author, str):
            raise InvalidRequestError("edit author must be a string")
        try:
            if op == "stroke":
                return cls(rev, stroke=Stroke.from_json(record["stroke"]), meta=meta,
                           author=author)
            if op == "mask":
                return cls(rev, mask=MaskEdit.from_json(record), meta=meta, author=author)
            if op == "relabel":
                old, new = _check_relabel(record["from"], record["to"])
                return cls(rev, relabel=(old, new), meta=meta, author=author)
        except (KeyError, TypeError, ValueError, IndexError, OverflowError, zlib.error,
                binascii.Error) as exc:
            if isinstance(exc, InvalidRequestError):
                raise
            raise InvalidRequestError(f"malformed {op} record: {exc!r}") from None
        raise InvalidRequestError(f"unknown edit op {op!r}")


@dataclass(frozen=True)
class EditResult:
    """What an edit changed: the new revision and the voxel box touched (maybe empty).

    ``edit`` is the edit made, undone or redone.
    """

    revision: int
    box: Box
    edit: Edit | None = None


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

    An edit is validated and computed first, then its record is appended to the log and
    fsync'd, and only then does it take effect: a failed write (a full disk) changes
    nothing, leaves no partial record and burns no revision. Reopening loads the latest
    checkpoint and replays the log after it; a record that cannot be replayed is reported
    (:attr:`problems`) and skipped, the rest kept. The log is checkpointed every
    ``checkpoint_every`` records (keeping the undo history), so reopening costs the same
    however long the history is.

    Parameters
    ----------
    shape
        Spatial shape of pyramid level 0.
    directory
        Where the edit log and checkpoint live; None keeps labels in memory only.
    block_shape
        Storage block shape (z, y, x).
    max_undo
        Edits kept undoable; older ones are folded into the base labels.
    checkpoint_every
        Log records between automatic checkpoints (None: only on :meth:`checkpoint`).
    """

    def __init__(self, shape: Sequence[int], directory: Path | None = None,
                 block_shape: Sequence[int] = (64, 64, 64), *, max_undo: int = MAX_UNDO,
                 checkpoint_every: int | None = CHECKPOINT_EVERY):
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.block_shape = (int(block_shape[0]), int(block_shape[1]), int(block_shape[2]))
        self.directory = Path(directory) if directory is not None else None
        self.max_undo = max(1, int(max_undo))
        self.checkpoint_every = checkpoint_every
        #: One line per log record that could not be replayed on opening (it was skipped).
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._checkpoint_lock = threading.Lock()
        self._base: dict[BlockIndex, np.ndarray] = {}
        self._blocks: dict[BlockIndex, np.ndarray] = {}
        self._revision = 0
        self._active: list[Edit] = []
        self._undone: list[Edit] = []
        self._fd: int | None = None
        self._log_size = 0
        # The replaced log, written too until the new one's rename is durable.
        self._old_fd: int | None = None
        self._old_log_size = 0
        self._checkpointer: threading.Thread | None = None
        self._records_since_checkpoint = 0
        # Records appended while a checkpoint is being written (None: none in progress).
        self._pending: list[bytes] | None = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()
            self._open_log()
        # Readers (the event loop, trainings) take this published snapshot without the
        # lock: writers hold the lock across the log's fsync, readers never wait on it.
        self._published = self._make_snapshot()

    # -- public API -------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The latest acknowledged revision (that of :meth:`snapshot`)."""
        return self._published.revision

    def paint(self, stroke: Stroke, author: str | None = None) -> EditResult:
        """Apply a stroke (label 0 erases) by ``author``; durable once this returns.

        Strokes are applied in the order they are acknowledged: where two overlap, the
        later one wins, and the log keeps both.

        Raises
        ------
        InvalidRequestError
            The stroke would test more than :data:`MAX_STROKE_VOXELS` voxels.
        StorageError
            Its record could not be written; nothing changed.
        """
        cost = stroke_cost(stroke, self.shape)
        if cost > MAX_STROKE_VOXELS:
            raise InvalidRequestError(
                f"stroke too costly: it would test {cost} voxels, at most "
                f"{MAX_STROKE_VOXELS} (use fewer points, a smaller radius or a flat plane)")
        return self._commit(lambda rev: Edit(rev, stroke=stroke, author=author))

    def paint_mask(self, box: Box, mask: np.ndarray, label: int,
                   author: str | None = None) -> EditResult:
        """Set the voxels where ``mask`` (shaped like ``box``) is True to ``label`` (0 erases).

        Like a stroke: durable once this returns, undoable, replayed on reopen. The box
        must lie inside the volume.
        """
        edit_mask = MaskEdit(box, mask, label)
        if not Box.from_shape(self.shape).contains(box):
            raise InvalidRequestError(f"mask box {box} is outside the labels of shape {self.shape}")
        return self._commit(lambda rev: Edit(rev, mask=edit_mask, author=author))

    def relabel(self, old: int, new: int, *, meta: dict | None = None,
                author: str | None = None) -> EditResult:
        """Change every voxel labelled ``old`` to ``new`` (0 removes a class's labels),
        as an edit by ``author``.

        ``meta`` is logged with the edit and returned with it by undo and redo.
        """
        old, new = _check_relabel(old, new)
        return self._commit(lambda rev: Edit(rev, relabel=(old, new), meta=meta,
                                             author=author))

    def undo(self, author: str | None = None) -> EditResult | None:
        """Take back the latest edit still in effect (by ``author``, when given); None
        when there is none. Later edits of others stay in effect."""
        with self._lock:
            index = _latest(self._active, author)
            if index is None:
                return None
            edit = self._active[index]
            remaining = self._active[:index] + self._active[index + 1:]
            blocks = dict(self._blocks)
            box = self._replay_region(edit, blocks, remaining)
            revision = self._revision + 1
            self._append({"op": "undo", "rev": revision, "of": edit.revision})
            self._blocks = blocks
            self._active = remaining
            self._undone.append(edit)
            self._revision = revision
            result = EditResult(revision, box, edit)
            self._publish()
        self._maybe_checkpoint()
        return result

    def redo(self, author: str | None = None) -> EditResult | None:
        """Re-apply the latest undone edit (by ``author``, when given); None when there is
        none. It applies on top of everything in effect, like a new edit."""
        with self._lock:
            index = _latest(self._undone, author)
            if index is None:
                return None
            edit = self._undone[index]
            blocks = dict(self._blocks)
            box = _apply(edit, blocks, self.shape, self.block_shape)
            revision = self._revision + 1
            self._append({"op": "redo", "rev": revision, "of": edit.revision})
            self._blocks = blocks
            del self._undone[index]
            self._active.append(edit)
            self._revision = revision
            self._fold_history()
            result = EditResult(revision, box, edit)
            self._publish()
        self._maybe_checkpoint()
        return result

    def snapshot(self) -> LabelSnapshot:
        """The labels at the latest acknowledged revision (never waits on a writer)."""
        return self._published

    def _make_snapshot(self) -> LabelSnapshot:
        return LabelSnapshot(self.shape, self.block_shape, dict(self._blocks), self._revision)

    def _publish(self) -> None:
        self._published = self._make_snapshot()

    def read(self, box: Box) -> np.ndarray:
        return self.snapshot().read(box)

    @property
    def can_undo(self) -> bool:
        return bool(self._active)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def can_undo_by(self, author: str | None) -> bool:
        return _latest(self._active, author) is not None

    def can_redo_by(self, author: str | None) -> bool:
        return _latest(self._undone, author) is not None

    def history(self) -> tuple[tuple[Edit, ...], tuple[Edit, ...]]:
        """(edits in effect that can be undone, oldest first; undone edits, oldest last)."""
        with self._lock:
            return tuple(self._active), tuple(self._undone)

    def referenced_values(self) -> set[int]:
        """Class values painted anywhere, or that an undo or redo could bring back."""
        with self._lock:
            blocks = {id(b): b for b in (*self._blocks.values(), *self._base.values())}
            edits = [*self._active, *self._undone]
        total = np.zeros(256, dtype=np.int64)
        for block in blocks.values():
            total += np.bincount(block.ravel(), minlength=256)
        values = {int(v) for v in np.flatnonzero(total)}
        for edit in edits:
            if edit.stroke is not None:
                values.add(edit.stroke.label)
            elif edit.mask is not None:
                values.add(edit.mask.label)
            elif edit.relabel is not None:
                values.update(edit.relabel)
        values.discard(0)
        return values

    def checkpoint(self) -> None:
        """Write the labels and the undo history atomically and start a shorter log.

        The edit lock is never held across a write or an fsync: blocks are snapshot by
        reference, the checkpoint file and the new log (the records appended meanwhile)
        are written and fsync'd outside it, and only the new log's rename happens under
        it. Until that rename is durable, edits go to both logs, so whichever file a
        crash leaves under the log's name holds every acknowledged edit.
        """
        if self.directory is None:
            return
        with self._checkpoint_lock:
            with self._lock:
                if self._fd is None:
                    raise StorageError("the label store is closed")
                revision = self._revision
                blocks, base = dict(self._blocks), dict(self._base)
                active, undone = list(self._active), list(self._undone)
                self._pending = []
            try:
                self._write_checkpoint(revision, blocks, base, active, undone)
            except OSError as exc:
                with self._lock:
                    self._pending = None
                raise StorageError(f"labels checkpoint not written: {exc.strerror}") from None
            # A crash before the log is replaced is harmless: replay skips the revisions
            # the checkpoint holds.
            try:
                self._replace_log()
            except OSError as exc:
                with self._lock:
                    self._pending = None
                raise StorageError(f"labels log not compacted: {exc.strerror}") from None

    def _replace_log(self) -> None:
        """Swap in a log of the records appended since the checkpoint began."""
        assert self.directory is not None
        tmp = self.directory / (LOG_NAME + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        copied = size = 0
        try:
            while True:
                with self._lock:
                    assert self._pending is not None
                    batch = self._pending[copied:]
                    if not batch:  # the new log holds every record: swap it in
                        os.replace(tmp, self.directory / LOG_NAME)
                        self._old_fd, self._old_log_size = self._fd, self._log_size
                        self._fd, self._log_size = fd, size
                        self._records_since_checkpoint = copied
                        self._pending = None
                        break
                data = b"".join(batch)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                copied += len(batch)
                size += len(data)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        try:
            _fsync_dir(self.directory)  # now the rename survives a crash
        finally:
            with self._lock:
                old, self._old_fd = self._old_fd, None
            if old is not None:
                os.close(old)

    def wait_for_checkpoint(self) -> None:
        """Block until a checkpoint running in the background (if any) is written."""
        with self._checkpoint_lock:
            pass

    def close(self) -> None:
        with self._checkpoint_lock, self._lock:
            for fd in (self._fd, self._old_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._old_fd = None

    # -- edits ------------------------------------------------------------------------

    def _commit(self, make: Callable[[int], Edit]) -> EditResult:
        with self._lock:
            edit = make(self._revision + 1)
            blocks = dict(self._blocks)
            box = _apply(edit, blocks, self.shape, self.block_shape)
            self._append(edit.to_json())
            self._blocks = blocks
            self._active.append(edit)
            _forget_redo(self._undone, edit.author)
            self._revision = edit.revision
            self._fold_history()
            result = EditResult(edit.revision, box, edit)
            self._publish()
        self._maybe_checkpoint()
        return result

    def _fold_history(self) -> None:
        """Make the oldest edits beyond :attr:`max_undo` part of the base labels."""
        while len(self._active) > self.max_undo:
            edit = self._active.pop(0)
            base = dict(self._base)
            _apply(edit, base, self.shape, self.block_shape)
            self._base = base

    def _replay_region(self, removed: Edit, blocks: dict[BlockIndex, np.ndarray],
                       active: Sequence[Edit]) -> Box:
        """Recompute in ``blocks`` the blocks ``removed`` touched, from the base and
        the edits ``active``."""
        indices = self._edit_blocks(removed)
        for index in indices:
            if index in self._base:
                blocks[index] = self._base[index]
            else:
                blocks.pop(index, None)
        for edit in active:
            _apply(edit, blocks, self.shape, self.block_shape, only=indices)
        return _union([_block_box(i, self.block_shape, self.shape) for i in indices])

    def _edit_blocks(self, edit: Edit) -> set[BlockIndex]:
        if edit.stroke is not None:
            return set(_block_indices(edit.stroke.bounding_box(self.shape), self.block_shape))
        if edit.mask is not None:
            return set(_block_indices(edit.mask.box, self.block_shape))
        return set(self._blocks) | set(self._base)

    def _maybe_checkpoint(self) -> None:
        """Every ``checkpoint_every`` records, checkpoint in a thread of its own: the edit
        that crossed the mark is acknowledged without waiting for the disk."""
        every = self.checkpoint_every
        if self.directory is None or not every or self._records_since_checkpoint < every:
            return
        if not self._checkpoint_lock.acquire(blocking=False):
            return  # a checkpoint is being written
        self._checkpoint_lock.release()
        with self._lock:
            if self._checkpointer is not None and self._checkpointer.is_alive():
                return
            self._checkpointer = threading.Thread(target=self._background_checkpoint,
                                                  name="labels-checkpoint", daemon=True)
            self._checkpointer.start()

    def _background_checkpoint(self) -> None:
        try:
            self.checkpoint()
        except StorageError as exc:
            log.warning("labels: %s (the log keeps every edit)", exc)

    # -- persistence ------------------------------------------------------------------

    def _open_log(self) -> None:
        assert self.directory is not None
        self._fd = os.open(self.directory / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                           0o644)
        self._log_size = os.fstat(self._fd).st_size

    def _append(self, record: dict) -> None:
        """Append and fsync one record, or raise StorageError with the log as it was."""
        if self.directory is None:
            return
        if self._fd is None:
            raise StorageError("the label store is closed")
        data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        # While a new log's rename is not yet durable, the record goes to the old one too.
        targets = [(self._fd, self._log_size)]
        if self._old_fd is not None:
            targets.append((self._old_fd, self._old_log_size))
        written = []
        try:
            for fd, start in targets:
                written.append((fd, start))
                if os.fstat(fd).st_size != start:  # an earlier failed write left bytes
                    os.ftruncate(fd, start)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
        except OSError as exc:
            for fd, start in written:
                try:
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError:
                    log.exception("labels: cannot truncate %s back after a failed write",
                                  self.directory / LOG_NAME)
            raise StorageError(f"label edit not saved: {exc.strerror or exc}") from None
        self._log_size += len(data)
        if self._old_fd is not None:
            self._old_log_size += len(data)
        self._records_since_checkpoint += 1
        if self._pending is not None:
            self._pending.append(data)

    def _write_checkpoint(self, revision: int, blocks: dict[BlockIndex, np.ndarray],
                          base: dict[BlockIndex, np.ndarray], active: list[Edit],
                          undone: list[Edit]) -> None:
        assert self.directory is not None
        arrays = {"__revision__": np.array([revision], dtype=np.int64)}
        for (z, y, x), block in blocks.items():
            if block.any():
                arrays[f"{z}_{y}_{x}"] = block
        differs = []
        for index in set(blocks) | set(base):
            if blocks.get(index) is not base.get(index):
                has_base = index in base
                differs.append([*index, int(has_base)])
                if has_base:
                    arrays["base_{}_{}_{}".format(*index)] = base[index]
        history = {"active": [e.to_json() for e in active],
                   "undone": [e.to_json() for e in undone], "base_differs": differs}
        arrays["__history__"] = np.frombuffer(json.dumps(history).encode(), dtype=np.uint8)
        tmp = self.directory / (CHECKPOINT_NAME + ".tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / CHECKPOINT_NAME)
            _fsync_dir(self.directory)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def _load(self) -> None:
        assert self.directory is not None
        checkpoint = self.directory / CHECKPOINT_NAME
        if checkpoint.exists():
            self._load_checkpoint(checkpoint)
        log_path = self.directory / LOG_NAME
        if not log_path.exists():
            return
        data = log_path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            # A crash mid-write (never acknowledged): drop the torn tail, so the next
            # record starts on a line of its own.
            log.warning("labels: dropping a torn last record of %d bytes in %s",
                        len(data) - complete, log_path)
            with open(log_path, "r+b") as f:
                f.truncate(complete)
                f.flush()
                os.fsync(f.fileno())
        replayed = 0
        for number, line in enumerate(data[:complete].split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_constant=_refuse_constant)
                if not isinstance(record, dict) or not isinstance(record.get("rev"), int):
                    raise InvalidRequestError("not an edit record")
                if record["rev"] <= self._revision:
                    continue
                self._replay_record(record)
            except (InvalidRequestError, ValueError, RecursionError) as exc:
                problem = f"{log_path}:{number}: skipped a bad record: {exc}"
                log.warning("labels: %s", problem)
                self.problems.append(problem)
                continue
            replayed += 1
        self._records_since_checkpoint = replayed
        log.info("labels: replayed %d edits, revision %d", replayed, self._revision)

    def _load_checkpoint(self, path: Path) -> None:
        with np.load(path) as data:
            revision = int(data["__revision__"][0])
            history = (json.loads(bytes(data["__history__"]))
                       if "__history__" in data.files else None)
            blocks: dict[BlockIndex, np.ndarray] = {}
            stored_base: dict[BlockIndex, np.ndarray] = {}
            for name in data.files:
                if name.startswith("__"):
                    continue
                block = data[name]
                block.setflags(write=False)
                if name.startswith("base_"):
                    z, y, x = (int(v) for v in name[5:].split("_"))
                    stored_base[(z, y, x)] = block
                else:
                    z, y, x = (int(v) for v in name.split("_"))
                    blocks[(z, y, x)] = block
        base = dict(blocks)
        if history is not None:
            for z, y, x, has_base in history["base_differs"]:
                if has_base:
                    base[(z, y, x)] = stored_base[(z, y, x)]
                else:
                    base.pop((z, y, x), None)
            self._active = [Edit.from_json(e) for e in history["active"]]
            self._undone = [Edit.from_json(e) for e in history["undone"]]
        self._blocks, self._base, self._revision = blocks, base, revision

    def _replay_record(self, record: dict) -> None:
        op, revision = record.get("op"), record["rev"]
        blocks = dict(self._blocks)
        if op == "undo":
            index = _named(self._active, record)
            if index is None:
                raise InvalidRequestError("undo with nothing to undo")
            edit = self._active[index]
            remaining = self._active[:index] + self._active[index + 1:]
            self._replay_region(edit, blocks, remaining)
            self._active = remaining
            self._undone.append(edit)
        elif op == "redo":
            index = _named(self._undone, record)
            if index is None:
                raise InvalidRequestError("redo with nothing to redo")
            edit = self._undone.pop(index)
            _apply(edit, blocks, self.shape, self.block_shape)
            self._active.append(edit)
        else:
            edit = Edit.from_json(record)
            _apply(edit, blocks, self.shape, self.block_shape)
            self._active.append(edit)
            _forget_redo(self._undone, edit.author)
        self._blocks = blocks
        self._revision = revision
        self._fold_history()


# -- undo history -------------------------------------------------------------------------


def _latest(edits: list[Edit], author: str | None) -> int | None:
    """Index of the latest edit by ``author`` (any author for None), or None."""
    for index in range(len(edits) - 1, -1, -1):
        if author is None or edits[index].author == author:
            return index
    return None


def _named(edits: list[Edit], record: dict) -> int | None:
    """Index of the edit an undo/redo record names (the latest one, in older logs)."""
    if "of" not in record:
        return len(edits) - 1 if edits else None
    return next((i for i, e in enumerate(edits) if e.revision == record["of"]), None)


def _forget_redo(undone: list[Edit], author: str | None) -> None:
    """A new edit ends its author's redo history (everyone's, for no author)."""
    undone[:] = [] if author is None else [e for e in undone if e.author != author]


# -- block edits (on a dictionary of copy-on-write blocks) ----------------------------------


def _apply(edit: Edit, blocks: dict[BlockIndex, np.ndarray], shape: tuple[int, int, int],
           block_shape: tuple[int, int, int], only: set[BlockIndex] | None = None) -> Box:
    if edit.stroke is not None:
        return _apply_stroke(edit.stroke, blocks, shape, block_shape, only)
    if edit.mask is not None:
        return _apply_mask(edit.mask, blocks, shape, block_shape, only)
    assert edit.relabel is not None
    return _apply_relabel(*edit.relabel, blocks, shape, block_shape, only)


def _set_voxels(blocks: dict[BlockIndex, np.ndarray], index: BlockIndex, block_box: Box,
                part: Box, mask: np.ndarray, label: int) -> None:
    block = blocks.get(index)
    if block is None:
        if label == 0:
            return
        block = np.zeros(block_box.shape, dtype=np.uint8)
    else:
        block = block.copy()
    block[part.relative_to(block_box)][mask] = label
    block.setflags(write=False)
    blocks[index] = block


def _apply_stroke(stroke: Stroke, blocks: dict[BlockIndex, np.ndarray],
                  shape: tuple[int, int, int], block_shape: tuple[int, int, int],
                  only: set[BlockIndex] | None = None) -> Box:
    box = stroke.bounding_box(shape)
    if box.is_empty:
        return box
    for index in _block_indices(box, block_shape):
        if only is not None and index not in only:
            continue
        block_box = _block_box(index, block_shape, shape)
        part = block_box.intersect(box)
        mask = rasterize(stroke, part)
        if mask.any():
            _set_voxels(blocks, index, block_box, part, mask, stroke.label)
    return box


def _apply_mask(edit: MaskEdit, blocks: dict[BlockIndex, np.ndarray],
                shape: tuple[int, int, int], block_shape: tuple[int, int, int],
                only: set[BlockIndex] | None = None) -> Box:
    if not Box.from_shape(shape).contains(edit.box):
        raise InvalidRequestError(f"mask box {edit.box} is outside the labels of shape {shape}")
    hit_box = Box.of_mask(edit.mask).translate(edit.box.start)
    if hit_box.is_empty:
        return hit_box
    for index in _block_indices(hit_box, block_shape):
        if only is not None and index not in only:
            continue
        block_box = _block_box(index, block_shape, shape)
        part = block_box.intersect(hit_box)
        mask = edit.mask[part.relative_to(edit.box)]
        if mask.any():
            _set_voxels(blocks, index, block_box, part, mask, edit.label)
    return hit_box


def _apply_relabel(old: int, new: int, blocks: dict[BlockIndex, np.ndarray],
                   shape: tuple[int, int, int], block_shape: tuple[int, int, int],
                   only: set[BlockIndex] | None = None) -> Box:
    touched: list[Box] = []
    for index, block in list(blocks.items()):
        if only is not None and index not in only:
            continue
        hit = block == old
        if hit.any():
            block = block.copy()
            block[hit] = new
            block.setflags(write=False)
            blocks[index] = block
            touched.append(_block_box(index, block_shape, shape))
    return _union(touched)


def _check_relabel(old, new) -> tuple[int, int]:
    old, new = check_label(old), check_label(new)
    if old == 0:
        raise InvalidRequestError("relabel needs old in 1..255 and new in 0..255")
    return old, new


def _refuse_constant(name: str):
    raise InvalidRequestError(f"{name} is not a valid number")


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
