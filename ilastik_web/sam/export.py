"""Batch export of automatic instance segmentation: every slice of a range, one label volume.

Each slice is segmented on its own by :func:`~ilastik_web.sam.automatic.segment_everything`
(AMG or AIS) and written as it is done into a zarr (v3) uint32 array shaped like the volume,
one chunk per slice along the plane's normal. Object ids are unique across the volume
(each slice's ids follow the previous slices'); objects are not joined across slices
(segment a block through the API for that). Slices already written by an interrupted run
are listed in the array's ``done_slices`` attribute and skipped when it is run again with
the same parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ilastik_web.abc import LazyVolume
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.automatic import AutoParams, Decoders, segment_everything
from ilastik_web.sam.embeddings import Cancelled, slice_image
from ilastik_web.sam.geometry import SliceRef, check_plane
from ilastik_web.sam.models import LoadedModel

log = logging.getLogger(__name__)


def export_automatic(volume: LazyVolume, model: LoadedModel, params: AutoParams,
                     output: Path, *, plane: str = "xy", start: int = 0,
                     stop: int | None = None, halo: int = 64,
                     progress: Callable[[int, int], None] = lambda done, total: None,
                     should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Segment slices ``start..stop-1`` of ``plane`` into the zarr array at ``output``.

    Returns
    -------
    dict
        ``{"output", "slices", "objects", "method"}``.
    """
    import zarr

    check_plane(plane)
    first = SliceRef(volume.shape, plane, start)  # type: ignore[arg-type]
    extent = volume.shape[first.normal]
    stop = extent if stop is None else min(int(stop), extent)
    if stop <= start:
        raise InvalidRequestError(f"no slices in {start}..{stop - 1}")
    decoder = Decoders().get(model) if params.method != "amg" else None
    method = params.method if params.method != "auto" else ("ais" if decoder else "amg")
    signature = {"model_hash": model.model_hash, "plane": plane, "params": params.to_json()}
    chunks = list(volume.shape)
    chunks[first.normal] = 1
    array = None
    if output.exists():
        existing = zarr.open_array(str(output), mode="r+")
        if existing.attrs.get("signature") == signature and existing.shape == volume.shape:
            array = existing
        else:
            raise InvalidRequestError(f"{output} exists and holds another export; remove it "
                                      "or choose another output")
    if array is None:
        array = zarr.create_array(str(output), shape=volume.shape, dtype=np.uint32,
                                  chunks=tuple(chunks), fill_value=0)
        array.attrs.update({"signature": signature, "done_slices": [], "next_id": 1,
                            "method": method})
    done = set(array.attrs.get("done_slices", []))
    next_id = int(array.attrs.get("next_id", 1))
    total = stop - start
    for i, index in enumerate(range(start, stop)):
        if index in done:
            progress(i + 1, total)
            continue
        if should_stop():
            raise Cancelled("export cancelled")
        ref = first.with_index(index)
        labels = segment_everything(model, slice_image(volume, ref), params, decoder, halo=halo)
        found = int(labels.max(initial=0))  # numbered 1..found
        labels = np.where(labels > 0, labels + np.uint32(next_id - 1), 0).astype(np.uint32)
        next_id += found
        target = [slice(None)] * 3
        target[ref.normal] = slice(index, index + 1)
        array[tuple(target)] = np.expand_dims(labels, ref.normal)
        done.add(index)
        array.attrs.update({"done_slices": sorted(done), "next_id": next_id})
        progress(i + 1, total)
    log.info("exported %s segmentation of %d slices (%d objects) to %s", method, total,
             next_id - 1, output)
    return {"output": str(output), "slices": total, "objects": next_id - 1, "method": method}
