"""Instance edits as data: each one a short list of :class:`Step` s over uint32 id blocks.

A step is "set the voxels of a mask whose current id is one of ``values`` to ``to``",
which is enough for every instance tool (new objects, polygons, cuts, brush and eraser,
merges, deletions) and replays the same way after an earlier edit was undone.
Records go to and come from the log as JSON (:meth:`InstanceEdit.to_json`).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.labels.store import _block_box, _block_indices, _union

BlockIndex = tuple[int, int, int]
MAX_ID = (1 << 32) - 1


@dataclass(frozen=True, eq=False)
class Step:
    """Set the voxels of ``mask`` (over ``box``) whose id is in ``values`` to ``to``.

    ``box`` None is the whole volume (then ``mask`` is None and ``values`` must not hold
    0: such a step only recolours existing objects); ``mask`` None is the whole box;
    ``values`` None is any id.
    """

    box: Box | None
    mask: np.ndarray | None
    values: tuple[int, ...] | None
    to: int

    def __post_init__(self) -> None:
        if self.box is None and (self.mask is not None or self.values is None or 0 in self.values):
            raise InvalidRequestError("a whole-volume step only recolours given objects")
        if self.mask is not None:
            assert self.box is not None
            mask = np.ascontiguousarray(self.mask, dtype=bool)
            if mask.shape != self.box.shape:
                raise InvalidRequestError(f"mask {mask.shape} differs from its box {self.box}")
            mask.setflags(write=False)
            object.__setattr__(self, "mask", mask)
        if self.values is not None:
            object.__setattr__(self, "values", tuple(_check_id(v, allow_zero=True)
                                                     for v in self.values))
        object.__setattr__(self, "to", _check_id(self.to, allow_zero=True))

    def to_json(self) -> dict:
        out: dict = {"to": self.to, "values": list(self.values) if self.values else None,
                     "box": None if self.box is None else [list(self.box.start),
                                                           list(self.box.stop)]}
        if self.mask is not None:
            bits = zlib.compress(np.packbits(self.mask.ravel()).tobytes(), 6)
            out["bits"] = base64.b64encode(bits).decode("ascii")
        return out

    @classmethod
    def from_json(cls, data: dict) -> Step:
        box = None if data["box"] is None else Box(tuple(data["box"][0]), tuple(data["box"][1]))
        mask = None
        if data.get("bits") is not None:
            assert box is not None
            packed = np.frombuffer(zlib.decompress(base64.b64decode(data["bits"])), np.uint8)
            mask = np.unpackbits(packed, count=box.size).astype(bool).reshape(box.shape)
        values = None if data["values"] is None else tuple(data["values"])
        return cls(box, mask, values, data["to"])


@dataclass(frozen=True)
class InstanceEdit:
    """One undoable instance edit.

    ``kind`` names the tool (add, polygon, replace, clear, cut, brush, erase, merge,
    delete); ``objects`` maps each object the edit creates or adds to, to the source it
    contributes; ``key`` orders it against a project's label edits.
    """

    revision: int
    kind: str
    steps: tuple[Step, ...]
    objects: dict[int, str] = field(default_factory=dict)
    author: str | None = None
    key: int = 0

    def to_json(self) -> dict:
        return {"op": "edit", "rev": self.revision, "kind": self.kind, "key": self.key,
                "author": self.author, "objects": {str(k): v for k, v in self.objects.items()},
                "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, record: dict) -> InstanceEdit:
        try:
            author = record.get("author")
            if author is not None and not isinstance(author, str):
                raise InvalidRequestError("edit author must be a string")
            return cls(int(record["rev"]), str(record["kind"]),
                       tuple(Step.from_json(s) for s in record["steps"]),
                       {int(k): str(v) for k, v in record.get("objects", {}).items()},
                       author, int(record.get("key", 0)))
        except InvalidRequestError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, zlib.error, binascii.Error,
                AssertionError) as exc:
            raise InvalidRequestError(f"malformed instance edit: {exc!r}") from None


@dataclass(frozen=True)
class InstanceEditResult:
    """What an instance edit, undo or redo changed: the new revision, the voxel box
    touched (maybe empty), the edit, and the object the edit made or changed (if one)."""

    revision: int
    box: Box
    edit: InstanceEdit | None = None
    object_id: int | None = None


def _max_id(edit: InstanceEdit) -> int:
    return max([0, *edit.objects, *(s.to for s in edit.steps)])


def _check_id(value, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidRequestError("object ids are integers")
    value = int(value)
    if not (0 if allow_zero else 1) <= value <= MAX_ID:
        raise InvalidRequestError(f"object id {value} is out of range")
    return value


# -- applying edits to copy-on-write blocks --------------------------------------------


def _apply(edit: InstanceEdit, blocks: dict[BlockIndex, np.ndarray], shape, block_shape,
           only: set[BlockIndex] | None = None) -> Box:
    touched = [_apply_step(s, blocks, shape, block_shape, only) for s in edit.steps]
    return _union([b for b in touched if not b.is_empty])


def _apply_step(step: Step, blocks: dict[BlockIndex, np.ndarray], shape, block_shape,
                only: set[BlockIndex] | None) -> Box:
    if step.box is None:
        indices = list(blocks)
        box = Box.from_shape(shape)
    else:
        box = step.box
        indices = list(_block_indices(box, block_shape))
    touched = []
    for index in indices:
        if only is not None and index not in only:
            continue
        block_box = _block_box(index, block_shape, shape)
        part = block_box.intersect(box)
        if part.is_empty:
            continue
        block = blocks.get(index)
        if block is None and step.values is not None and 0 not in step.values:
            continue
        current = (block[part.relative_to(block_box)] if block is not None
                   else np.zeros(part.shape, np.uint32))
        hit = (step.mask[part.relative_to(box)] if step.mask is not None
               else np.ones(part.shape, bool))
        if step.values is not None:
            hit = hit & np.isin(current, step.values)
        hit = hit & (current != step.to)
        if not hit.any():
            continue
        new = np.zeros(block_box.shape, np.uint32) if block is None else block.copy()
        new[part.relative_to(block_box)][hit] = step.to
        new.setflags(write=False)
        blocks[index] = new
        touched.append(Box.of_mask(hit).translate(part.start))
    return _union(touched)
