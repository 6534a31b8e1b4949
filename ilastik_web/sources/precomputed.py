"""Neuroglancer precomputed volumes (local folder or http(s) URL with an ``info`` file),
read with tensorstore; the ``scales`` list is served as the pyramid.

Voxel sizes are the scales' ``resolution`` (nm, x, y, z). Sharded and unsharded scales
and every encoding tensorstore decodes are supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.errors import SourceError
from ilastik_web.sources._common import StoredArrayVolume, assemble_pyramid
from ilastik_web.sources._tensorstore import open_tensorstore, tensorstore_volume
from ilastik_web.sources.location import Location

_ROLES = ("x", "y", "z", "c")


def open_precomputed(
    location: Location, info: dict[str, Any], *, voxel_size: Sequence[float] | None = None
) -> MultiscaleVolume:
    """Open every scale of a precomputed volume whose ``info`` was already read."""
    shown = str(location)
    scales = info.get("scales")
    if not isinstance(scales, list) or not scales:
        raise SourceError(f"{shown}: corrupt precomputed info: no scales")
    levels: list[StoredArrayVolume] = []
    for index, scale in enumerate(scales):
        resolution = scale.get("resolution") if isinstance(scale, dict) else None
        if (
            not isinstance(resolution, list)
            or len(resolution) != 3
            or not all(isinstance(v, int | float) and v > 0 for v in resolution)
        ):
            raise SourceError(f"{shown}: corrupt precomputed info: scale {index} resolution")
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": location.kvstore_spec(),
            "scale_index": index,
        }
        store = open_tensorstore(spec, shown)
        volume = tensorstore_volume(
            store,
            _ROLES,
            voxel_size=(resolution[2], resolution[1], resolution[0]),
            key=f"precomputed:{location}/{scale.get('key', index)}",
            location=shown,
        )
        levels.append(volume)
    name = location.text.rstrip("/").rsplit("/", 1)[-1]
    return MultiscaleVolume(name, assemble_pyramid(name, levels, voxel_size, shown))
