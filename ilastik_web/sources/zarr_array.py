"""Plain zarr arrays, format v2 (``.zarray``) or v3 (``zarr.json``), read with tensorstore.

Axis names come from zarr v3 ``dimension_names`` or xarray's ``_ARRAY_DIMENSIONS``
attribute; without them the shape heuristics of
:func:`ilastik_web.sources._common.guess_roles` apply. Plain zarr carries no voxel size:
it is 1 nm per axis unless overridden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ilastik_web.errors import SourceError
from ilastik_web.sources._common import StoredArrayVolume, guess_roles, role_of_axis_name
from ilastik_web.sources._tensorstore import open_tensorstore, tensorstore_volume
from ilastik_web.sources.location import Location, MetadataReader


def zarr_driver(reader: MetadataReader) -> tuple[str, dict[str, Any]] | None:
    """(tensorstore driver, metadata) when the location is a zarr array, else None."""
    v3 = reader.read_json("zarr.json")
    if v3 is not None:
        return ("zarr3", v3) if v3.get("node_type") == "array" else None
    v2 = reader.read_json(".zarray")
    if v2 is not None:
        return "zarr", v2
    return None


def _axis_names(driver: str, metadata: dict[str, Any], reader: MetadataReader) -> list | None:
    if driver == "zarr3":
        names = metadata.get("dimension_names")
    else:
        names = (reader.read_json(".zattrs") or {}).get("_ARRAY_DIMENSIONS")
    if not names or any(not isinstance(n, str) or not n for n in names):
        return None
    return names


def open_zarr_array(
    location: Location,
    *,
    voxel_size: Sequence[float] | None = None,
    key: str | None = None,
    reader: MetadataReader | None = None,
) -> StoredArrayVolume:
    """Open one zarr array as a lazy volume.

    Parameters
    ----------
    location
        The array's folder or URL.
    voxel_size
        Nanometres (z, y, x); 1 nm per axis when None.
    key
        Cache identity; defaults to ``zarr:<location>``.
    """
    reader = reader or MetadataReader(location)
    found = zarr_driver(reader)
    if found is None:
        raise SourceError(f"{location}: not a zarr array (no .zarray or zarr.json array)")
    driver, metadata = found
    store = open_tensorstore({"driver": driver, "kvstore": location.kvstore_spec()}, str(location))
    names = _axis_names(driver, metadata, reader)
    if names is not None and len(names) == store.ndim:
        roles = [role_of_axis_name(n, str(location)) for n in names]
    else:
        roles = list(guess_roles(store.shape, str(location)))
    return tensorstore_volume(
        store,
        roles,
        voxel_size=voxel_size or (1.0, 1.0, 1.0),
        key=key or f"zarr:{location}",
        location=str(location),
    )
