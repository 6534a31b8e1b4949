"""Instance annotations: objects with their own ids, edited with undo and crash safety.

The ids live in sparse uint32 blocks. Every edit (a SAM object, a polygon, a cut, a brush
stroke, a merge, a deletion) is a short list of :class:`Step` s, each "set the voxels of a
mask whose current id is one of ``values`` to ``to``". An edit is computed first, then
its record is appended to ``edits.log`` and fsync'd, and only then takes effect: an
acknowledged edit survives ``kill -9``, a failed write changes nothing. Undo and redo work
like the label store's (:mod:`ilastik_web.labels.store`): per author, by replaying the
edits still in effect over the blocks an undone edit touched, with copy-on-write blocks so
a snapshot (for serving) is a dictionary copy. The log is checkpointed every
``checkpoint_every`` records.

Each object remembers where it came from (``sam``, ``amg``, ``ais``, ``polygon``,
``brush``; :meth:`InstanceStore.sources`), for the training-set manifest.

Ids are never reused, not even after an undo, so redoing an edit can never paint into an
object made meanwhile.

Edits carry an order ``key`` from a ``clock`` (a project passes its label revision), so a
project can interleave instance and label edits in one undo history
(:meth:`ilastik_web.project.Project.undo`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.errors import InvalidRequestError, NotFoundError, StorageError
from ilastik_web.labels.rasterize import MAX_STROKE_VOXELS, Stroke, rasterize, stroke_cost

# The label store's block and history helpers work on these blocks and edits alike.
from ilastik_web.labels.store import (
    _block_box,
    _block_indices,
    _forget_redo,
    _fsync_dir,
    _latest,
    _union,
)
from ilastik_web.listeners import Listeners
from ilastik_web.sam.geometry import SliceRef
from ilastik_web.sam.instance_edits import (
    MAX_ID,
    InstanceEdit,
    InstanceEditResult,
    Step,
    _apply,
    _max_id,
)

log = logging.getLogger(__name__)

__all__ = ["InstanceEdit", "InstanceEditResult", "InstanceStore", "InstanceVolume", "Step"]

BlockIndex = tuple[int, int, int]
LOG_NAME = "edits.log"
CHECKPOINT_NAME = "checkpoint.npz"
#: Where objects can come from (the training-set manifest's ``source``).
SOURCES = ("sam", "amg", "ais", "polygon", "brush", "import")
#: Edits kept undoable (older ones become part of the base).
MAX_UNDO = 100
#: Log records between automatic checkpoints.
CHECKPOINT_EVERY = 256


class InstanceStore:
    """Objects (uint32 ids) over a volume of ``shape`` (z, y, x), with an edit log.

    Parameters
    ----------
    shape
        Spatial shape of level 0.
    directory
        Where the log and checkpoint live; None keeps objects in memory.
    block_shape
        Storage block shape of the id volume.
    clock
        Gives each edit its order key (a project's label revision); None: 0.
    max_undo, checkpoint_every
        As for :class:`~ilastik_web.labels.store.LabelStore`.
    """

    def __init__(self, shape: Sequence[int], directory: Path | None = None,
                 block_shape: Sequence[int] = (64, 64, 64), *,
                 clock: Callable[[], int] | None = None, max_undo: int = MAX_UNDO,
                 checkpoint_every: int | None = CHECKPOINT_EVERY):
        self.shape = tuple(int(s) for s in shape)
        self.block_shape = tuple(int(b) for b in block_shape)
        self.directory = Path(directory) if directory is not None else None
        self.clock = clock
        self.max_undo = max(1, int(max_undo))
        self.checkpoint_every = checkpoint_every
        #: Log records that could not be replayed on opening (skipped), one line each.
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._blocks: dict[BlockIndex, np.ndarray] = {}
        self._base: dict[BlockIndex, np.ndarray] = {}
        self._base_sources: dict[int, list[str]] = {}
        self._active: list[InstanceEdit] = []
        self._undone: list[InstanceEdit] = []
        self._revision = 0
        self._next_id = 1
        self._fd: int | None = None
        self._records = 0
        self._listeners: Listeners[Callable[[], None]] = Listeners("instance store")
        self._ids_cache: tuple[int, list[int]] | None = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()
            self._fd = os.open(self.directory / LOG_NAME,
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @staticmethod
    def holds_objects(directory: Path) -> bool:
        """Whether ``directory`` holds an instance store's edits or objects (its log, a
        checkpoint, or files of the older one-file-per-object layout)."""
        directory = Path(directory)
        log_path = directory / LOG_NAME
        return ((log_path.is_file() and log_path.stat().st_size > 0)
                or (directory / CHECKPOINT_NAME).is_file() or any(directory.glob("*.npz")))

    # -- reading -----------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def object_ids(self) -> list[int]:
        """Ids of the objects that have voxels now, ascending."""
        with self._lock:
            revision, blocks = self._revision, list(self._blocks.values())
        cached = self._ids_cache
        if cached is not None and cached[0] == revision:
            return list(cached[1])
        ids: set[int] = set()
        for block in blocks:
            ids.update(int(v) for v in np.unique(block) if v)
        result = sorted(ids)
        self._ids_cache = (revision, result)
        return list(result)

    def sources(self) -> dict[int, str]:
        """Object id -> where it came from (the source of the edit that made it), for the
        objects present now."""
        with self._lock:
            history = {k: list(v) for k, v in self._base_sources.items()}
            for edit in self._active:
                for object_id, source in edit.objects.items():
                    history.setdefault(object_id, []).append(source)
        return {i: history.get(i, ["import"])[0] for i in self.object_ids}

    def object_sources(self, object_id: int) -> list[str]:
        """Every source that contributed to an object, oldest first."""
        with self._lock:
            out = list(self._base_sources.get(object_id, []))
            for edit in self._active:
                if object_id in edit.objects:
                    out.append(edit.objects[object_id])
        return out

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

    def object_at(self, point_zyx: Sequence[int]) -> int:
        """The id at a voxel (0: background)."""
        point = tuple(int(p) for p in point_zyx)
        box = Box(point, tuple(p + 1 for p in point))
        if not Box.from_shape(self.shape).contains(box):
            raise InvalidRequestError(f"voxel {point} is outside the volume {self.shape}")
        return int(self.read(box).ravel()[0])

    def bounding_box(self, object_id: int) -> Box:
        """The (z, y, x) box of an object's voxels; NotFoundError if it has none."""
        _, blocks = self.snapshot()
        boxes = []
        for index, block in blocks.items():
            hit = block == object_id
            if hit.any():
                boxes.append(Box.of_mask(hit).translate(
                    _block_box(index, self.block_shape, self.shape).start))
        if not boxes:
            raise NotFoundError(f"no object {object_id}")
        return _union(boxes)

    # -- history -----------------------------------------------------------------------

    def history(self) -> tuple[tuple[InstanceEdit, ...], tuple[InstanceEdit, ...]]:
        """(edits in effect that can be undone, oldest first; undone edits, oldest last)."""
        with self._lock:
            return tuple(self._active), tuple(self._undone)

    def latest(self, author: str | None, *, undone: bool = False) -> InstanceEdit | None:
        """The edit :meth:`undo` (or, with ``undone``, :meth:`redo`) would act on."""
        with self._lock:
            edits = self._undone if undone else self._active
            index = _latest(edits, author)
            return None if index is None else edits[index]

    def can_undo_by(self, author: str | None) -> bool:
        return self.latest(author) is not None

    def can_redo_by(self, author: str | None) -> bool:
        return self.latest(author, undone=True) is not None

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every change (from the editing thread)."""
        return self._listeners.subscribe(listener)

    # -- edits -------------------------------------------------------------------------

    def add(self, box: Box, mask: np.ndarray, *, source: str = "sam",
            author: str | None = None) -> int:
        """Store a new object (covering what it overlaps); return its id."""
        mask = np.asarray(mask, dtype=bool)
        self._check_box(box, mask)
        if not mask.any():
            raise InvalidRequestError("an object needs at least one voxel")
        return self._commit("add", lambda new: [Step(box, mask, None, new())],
                            author, source=source).object_id

    def paint_polygon(self, ref: SliceRef, box: Box, mask: np.ndarray,
                      object_id: int | None = None, *, replace: bool = False,
                      author: str | None = None) -> InstanceEditResult:
        """A filled polygon (``box``/``mask`` of slice ``ref``, from
        :func:`~ilastik_web.sam.instance_geometry.polygon_mask`): a new object, or added
        to ``object_id``; with ``replace`` it replaces that object's region on the slice
        (editing a polygon's vertices). The polygon covers what it overlaps."""
        self._check_box(box, mask)
        if object_id is None:
            if replace:
                raise InvalidRequestError("replacing a slice region needs an object_id")
            return self._commit("polygon", lambda new: [Step(box, mask, None, new())], author,
                                source="polygon")
        self._require(object_id)
        steps = [Step(ref.box, None, (object_id,), 0)] if replace else []
        steps.append(Step(box, mask, None, object_id))
        return self._commit("replace" if replace else "polygon", lambda new: steps, author,
                            source="polygon", target=object_id)

    def clear_slice(self, ref: SliceRef, object_id: int, *,
                    author: str | None = None) -> InstanceEditResult:
        """Delete an object's region on one slice (deleting a polygon)."""
        self._require(object_id)
        return self._commit("clear", lambda new: [Step(ref.box, None, (object_id,), 0)],
                            author, target=object_id)

    def cut(self, object_id: int, box: Box, mask: np.ndarray, *, remove: bool = False,
            author: str | None = None) -> InstanceEditResult:
        """Take the voxels of ``object_id`` under ``mask`` away from it: into a new object
        (a split; its id is the result's ``object_id``), or to background with ``remove``
        (a trim)."""
        self._check_box(box, mask)
        self._require(object_id)
        current = self.read(box)
        if not (mask & (current == object_id)).any():
            raise InvalidRequestError(f"the cut holds no voxel of object {object_id}")
        if remove:
            return self._commit("cut", lambda new: [Step(box, mask, (object_id,), 0)], author,
                                target=object_id)
        source = (self.object_sources(object_id) or ["import"])[0]
        return self._commit("cut", lambda new: [Step(box, mask, (object_id,), new())], author,
                            source=source)

    def brush(self, stroke: Stroke, object_id: int | None = None, *, erase: bool = False,
              author: str | None = None) -> InstanceEditResult:
        """A brush stroke on the selected object only: it paints ``object_id`` into the
        background and the object itself (never over another object), or with ``erase``
        clears the voxels of ``object_id`` alone. Without an object the brush starts a
        new one. The stroke's label is ignored."""
        cost = stroke_cost(stroke, self.shape)
        if cost > MAX_STROKE_VOXELS:
            raise InvalidRequestError(f"stroke too costly: it would test {cost} voxels, at "
                                      f"most {MAX_STROKE_VOXELS}")
        box = stroke.bounding_box(self.shape)
        if box.is_empty:
            raise InvalidRequestError("the stroke is outside the volume")
        mask = rasterize(stroke, box)
        if object_id is None:
            if erase:
                raise InvalidRequestError("the eraser needs a selected object")
            return self._commit("brush", lambda new: [Step(box, mask, (0,), new())], author,
                                source="brush")
        self._require(object_id)
        if erase:
            return self._commit("erase", lambda new: [Step(box, mask, (object_id,), 0)],
                                author, target=object_id)
        return self._commit("brush", lambda new: [Step(box, mask, (0, object_id), object_id)],
                            author, source="brush", target=object_id)

    def merge(self, keep: int, other: int, *, author: str | None = None) -> InstanceEditResult:
        """Make ``other`` part of ``keep`` (``other``'s id disappears)."""
        if keep == other:
            raise InvalidRequestError("merging needs two different objects")
        self._require(keep)
        self._require(other)
        return self._commit("merge", lambda new: [Step(None, None, (other,), keep)], author,
                            target=keep)

    def remove(self, object_id: int, *, author: str | None = None) -> InstanceEditResult:
        """Delete an object (undoable)."""
        self._require(object_id)
        return self._commit("delete", lambda new: [Step(None, None, (object_id,), 0)], author)

    def undo(self, author: str | None = None) -> InstanceEditResult | None:
        """Take back ``author``'s latest edit still in effect (anyone's for None)."""
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
            self._blocks, self._active, self._revision = blocks, remaining, revision
            self._undone.append(edit)
        self._after_change()
        return InstanceEditResult(revision, box, edit)

    def redo(self, author: str | None = None) -> InstanceEditResult | None:
        """Re-apply ``author``'s latest undone edit on top of everything in effect."""
        with self._lock:
            index = _latest(self._undone, author)
            if index is None:
                return None
            edit = self._undone[index]
            blocks = dict(self._blocks)
            box = _apply(edit, blocks, self.shape, self.block_shape)
            revision = self._revision + 1
            self._append({"op": "redo", "rev": revision, "of": edit.revision})
            self._blocks, self._revision = blocks, revision
            del self._undone[index]
            self._active.append(edit)
            self._fold_history()
        self._after_change()
        return InstanceEditResult(revision, box, edit)

    # -- internals ---------------------------------------------------------------------

    def _check_box(self, box: Box, mask: np.ndarray) -> None:
        if box.ndim != 3 or np.shape(mask) != box.shape or \
                not Box.from_shape(self.shape).contains(box):
            raise InvalidRequestError(f"object box {box} / mask {np.shape(mask)} do not fit "
                                      f"the volume of shape {self.shape}")

    def _require(self, object_id: int) -> None:
        if object_id not in self.object_ids:
            raise NotFoundError(f"no object {object_id}")

    def _commit(self, kind: str, make_steps: Callable[[Callable[[], int]], list[Step]],
                author: str | None, *, source: str | None = None,
                target: int | None = None) -> InstanceEditResult:
        if source is not None and source not in SOURCES:
            raise InvalidRequestError(f"object source must be one of {SOURCES}")
        with self._lock:
            made: list[int] = []

            def new_id() -> int:
                value = self._next_id + len(made)
                if value > MAX_ID:
                    raise InvalidRequestError("no object ids left")
                made.append(value)
                return value

            steps = tuple(make_steps(new_id))
            object_id = made[0] if made else target
            objects = {i: source for i in made} if source else {}
            if source and target is not None and not made:
                objects[target] = source
            edit = InstanceEdit(self._revision + 1, kind, steps, objects, author,
                                int(self.clock()) if self.clock is not None else 0)
            blocks = dict(self._blocks)
            box = _apply(edit, blocks, self.shape, self.block_shape)
            if box.is_empty:
                raise InvalidRequestError(f"the {kind} changes no voxel")
            self._append(edit.to_json())
            self._blocks, self._revision = blocks, edit.revision
            self._next_id += len(made)
            self._active.append(edit)
            _forget_redo(self._undone, author)
            self._fold_history()
        self._after_change()
        return InstanceEditResult(edit.revision, box, edit, object_id)

    def _after_change(self) -> None:
        self._maybe_checkpoint()
        self._listeners.call()

    def _fold_history(self) -> None:
        while len(self._active) > self.max_undo:
            edit = self._active.pop(0)
            base = dict(self._base)
            _apply(edit, base, self.shape, self.block_shape)
            self._base = base
            for object_id, source in edit.objects.items():
                self._base_sources.setdefault(object_id, []).append(source)

    def _replay_region(self, removed: InstanceEdit, blocks: dict[BlockIndex, np.ndarray],
                       active: Sequence[InstanceEdit]) -> Box:
        indices: set[BlockIndex] = set()
        for step in removed.steps:
            if step.box is None:
                indices |= set(self._blocks) | set(self._base)
            else:
                indices |= set(_block_indices(step.box, self.block_shape))
        for index in indices:
            if index in self._base:
                blocks[index] = self._base[index]
            else:
                blocks.pop(index, None)
        for edit in active:
            _apply(edit, blocks, self.shape, self.block_shape, only=indices)
        return _union([_block_box(i, self.block_shape, self.shape) for i in indices])

    # -- persistence -------------------------------------------------------------------

    def _append(self, record: dict) -> None:
        """Append and fsync one record, or raise StorageError with the log as it was."""
        if self.directory is None:
            return
        if self._fd is None:
            raise StorageError("the instance store is closed")
        data = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                log.exception("instances: cannot truncate the log after a failed write")
            raise StorageError(f"instance edit not saved: {exc.strerror or exc}") from None
        self._records += 1

    def _maybe_checkpoint(self) -> None:
        every = self.checkpoint_every
        if self.directory is not None and every and self._records >= every:
            try:
                self.checkpoint()
            except StorageError as exc:
                log.warning("instances: %s (the log keeps every edit)", exc)

    def checkpoint(self) -> None:
        """Write the ids and the undo history atomically and start an empty log."""
        if self.directory is None:
            return
        with self._lock:
            arrays: dict[str, np.ndarray] = {}
            for (z, y, x), block in self._blocks.items():
                arrays[f"{z}_{y}_{x}"] = block
            for (z, y, x), block in self._base.items():
                if self._blocks.get((z, y, x)) is not block:
                    arrays[f"base_{z}_{y}_{x}"] = block
            same = [list(i) for i in self._base if self._blocks.get(i) is self._base[i]]
            state = {"revision": self._revision, "next_id": self._next_id, "base_same": same,
                     "base_sources": {str(k): v for k, v in self._base_sources.items()},
                     "active": [e.to_json() for e in self._active],
                     "undone": [e.to_json() for e in self._undone]}
            arrays["__state__"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
            tmp = self.directory / (CHECKPOINT_NAME + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, **arrays)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.directory / CHECKPOINT_NAME)
                _fsync_dir(self.directory)
                # A crash before the truncation is harmless: replay skips revisions the
                # checkpoint holds.
                if self._fd is not None:
                    os.ftruncate(self._fd, 0)
                    os.fsync(self._fd)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise StorageError(f"instances checkpoint not written: {exc.strerror}") \
                    from None
            self._records = 0

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _load(self) -> None:
        assert self.directory is not None
        checkpoint = self.directory / CHECKPOINT_NAME
        log_path = self.directory / LOG_NAME
        if checkpoint.exists():
            self._load_checkpoint(checkpoint)
        elif not log_path.exists():
            self._import_object_files()
        if not log_path.exists():
            return
        data = log_path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a torn record, never acknowledged
            log.warning("instances: dropping a torn last record in %s", log_path)
            with open(log_path, "r+b") as f:
                f.truncate(complete)
                os.fsync(f.fileno())
        for number, line in enumerate(data[:complete].split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("rev"), int):
                    raise InvalidRequestError("not an edit record")
                if record["rev"] <= self._revision:
                    continue
                self._replay(record)
            except (InvalidRequestError, ValueError, RecursionError) as exc:
                problem = f"{log_path}:{number}: skipped a bad record: {exc}"
                log.warning("instances: %s", problem)
                self.problems.append(problem)
                continue
            self._records += 1

    def _replay(self, record: dict) -> None:
        op = record.get("op")
        blocks = dict(self._blocks)
        if op in ("undo", "redo"):
            edits = self._active if op == "undo" else self._undone
            index = next((i for i, e in enumerate(edits) if e.revision == record.get("of")),
                         None)
            if index is None:
                raise InvalidRequestError(f"{op} of an unknown edit")
            edit = edits[index]
            if op == "undo":
                remaining = self._active[:index] + self._active[index + 1:]
                self._replay_region(edit, blocks, remaining)
                self._active = remaining
                self._undone.append(edit)
            else:
                del self._undone[index]
                _apply(edit, blocks, self.shape, self.block_shape)
                self._active.append(edit)
        elif op == "edit":
            edit = InstanceEdit.from_json(record)
            _apply(edit, blocks, self.shape, self.block_shape)
            self._active.append(edit)
            _forget_redo(self._undone, edit.author)
            self._next_id = max(self._next_id, _max_id(edit) + 1)
        else:
            raise InvalidRequestError(f"unknown op {op!r}")
        self._blocks = blocks
        self._revision = record["rev"]
        self._fold_history()

    def _load_checkpoint(self, path: Path) -> None:
        with np.load(path) as data:
            state = json.loads(bytes(data["__state__"]))
            blocks, base = {}, {}
            for name in data.files:
                if name.startswith("__"):
                    continue
                block = data[name]
                block.setflags(write=False)
                target = base if name.startswith("base_") else blocks
                z, y, x = (int(v) for v in name.removeprefix("base_").split("_"))
                target[(z, y, x)] = block
        for z, y, x in state["base_same"]:
            base[(z, y, x)] = blocks[(z, y, x)]
        self._blocks, self._base = blocks, base
        self._revision, self._next_id = int(state["revision"]), int(state["next_id"])
        self._base_sources = {int(k): list(v) for k, v in state["base_sources"].items()}
        self._active = [InstanceEdit.from_json(e) for e in state["active"]]
        self._undone = [InstanceEdit.from_json(e) for e in state["undone"]]

    def _import_object_files(self) -> None:
        """Objects of the one-file-per-object layout (before the log): the base."""
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
            step = Step(box, mask.reshape(box.shape), None, object_id)
            edit = InstanceEdit(0, "import", (step,))
            _apply(edit, self._blocks, self.shape, self.block_shape)
            self._base_sources[object_id] = ["sam"]
            self._next_id = max(self._next_id, object_id + 1)
        self._base = dict(self._blocks)


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
