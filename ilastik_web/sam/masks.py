"""Masks waiting for the user's accept or reject, and their JSON form for the viewer."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.errors import NotFoundError
from ilastik_web.sam.encoding import encode_rle, mask_polygons
from ilastik_web.sam.geometry import SlicePlane, SliceRef, in_plane_axes


@dataclass
class SamMask:
    """A mask proposed by SAM on one slice (a prompt) or through slices (propagation).

    ``box`` is the (z, y, x) box of ``mask`` in level-0 voxels; for a prompt it is one
    voxel thick along the plane's normal.
    """

    mask_id: str
    source: str  # what the mask was computed on: "layer:<id>" or "project:<id>"
    volume_key: str
    volume_shape: tuple[int, int, int]
    plane: SlicePlane
    box: Box
    mask: np.ndarray
    model_name: str
    scores: dict[int, float] = field(default_factory=dict)  # slice index -> SAM IoU score
    logits: np.ndarray | None = None  # low-res logits of a single-slice mask
    tile: int | None = None
    kind: str = "prompt"

    @property
    def slice_indices(self) -> range:
        normal = _normal(self.plane)
        return range(self.box.start[normal], self.box.stop[normal])

    def slice_mask(self, index: int) -> tuple[SliceRef, Box, np.ndarray]:
        """(slice, (row, column) box, 2D mask) of one slice of this mask."""
        ref = SliceRef(self.volume_shape, self.plane, index)
        rows, cols = in_plane_axes(self.plane)
        image = np.take(self.mask, index - self.box.start[ref.normal], axis=ref.normal)
        image_box = Box((self.box.start[rows], self.box.start[cols]),
                        (self.box.stop[rows], self.box.stop[cols]))
        return ref, image_box, image

    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.mask))

    def to_json(self, *, polygons: bool = True, rle: bool = True) -> dict[str, Any]:
        """The mask per slice: bounding box, run lengths and polygons in viewer x, y, z."""
        slices = []
        for index in self.slice_indices:
            ref, image_box, image = self.slice_mask(index)
            entry: dict[str, Any] = {"index": index, "score": self.scores.get(index)}
            crop = Box.of_mask(image)
            entry["pixels"] = int(np.count_nonzero(image))
            if crop.is_empty:
                entry.update(box_xyz=None, shape=[0, 0], rle=[], polygons_xyz=[])
                slices.append(entry)
                continue
            tight = crop.translate(image_box.start)
            zyx = ref.box_of(tight)
            entry["box_xyz"] = [list(zyx.start[::-1]), list(zyx.stop[::-1])]
            entry["shape"] = list(tight.shape)
            cropped = image[crop.slices]
            if rle:
                entry["rle"] = encode_rle(cropped)
            if polygons:
                offset = np.array([tight.start[1], tight.start[0]], dtype=np.float64)
                entry["polygons_xyz"] = [
                    np.round(ref.to_viewer(ring + offset), 3).tolist()
                    for ring in mask_polygons(cropped)
                ]
            slices.append(entry)
        return {
            "mask_id": self.mask_id,
            "kind": self.kind,
            "source": self.source,
            "model": self.model_name,
            "plane": self.plane,
            "box_xyz": [list(self.box.start[::-1]), list(self.box.stop[::-1])],
            "voxels": self.voxel_count(),
            "slices": slices,
        }


def _normal(plane: SlicePlane) -> int:
    return {"xy": 0, "xz": 1, "yz": 2}[plane]


class MaskStore:
    """The latest ``capacity`` proposed masks by id (older ones are forgotten)."""

    def __init__(self, capacity: int = 512):
        self.capacity = int(capacity)
        self._lock = threading.Lock()
        self._masks: OrderedDict[str, SamMask] = OrderedDict()

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(8)

    def put(self, mask: SamMask) -> SamMask:
        with self._lock:
            self._masks[mask.mask_id] = mask
            self._masks.move_to_end(mask.mask_id)
            while len(self._masks) > self.capacity:
                self._masks.popitem(last=False)
        return mask

    def get(self, mask_id: str) -> SamMask:
        with self._lock:
            mask = self._masks.get(mask_id)
        if mask is None:
            raise NotFoundError(f"no SAM mask {mask_id!r} (rejected, accepted or expired)")
        return mask

    def pop(self, mask_id: str) -> SamMask:
        with self._lock:
            mask = self._masks.pop(mask_id, None)
        if mask is None:
            raise NotFoundError(f"no SAM mask {mask_id!r} (rejected, accepted or expired)")
        return mask

    def __len__(self) -> int:
        with self._lock:
            return len(self._masks)
