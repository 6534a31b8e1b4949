"""OME-Zarr images (NGFF 0.4 on zarr v2, 0.5 on zarr v3); their multiscale pyramid is
served as is.

Axes come from the ``axes`` metadata (``channel`` type → c, ``time`` → read at t = 0,
``space`` axes by name). Voxel sizes are the ``scale`` transformations (dataset and
multiscale-wide, multiplied) converted from the axis units to nanometres; a scale with no
unit counts as nanometres. Pyramid levels whose scale is not an integer multiple of
level 0's are skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.errors import SourceError
from ilastik_web.sources._common import (
    CHANNEL,
    DROPPED,
    StoredArrayVolume,
    assemble_pyramid,
    nanometres_per_unit,
    role_of_axis_name,
)
from ilastik_web.sources._tensorstore import open_tensorstore, tensorstore_volume
from ilastik_web.sources.location import Location, MetadataReader
from ilastik_web.sources.zarr_array import zarr_driver

_DEFAULT_AXES = ("t", "c", "z", "y", "x")


def find_multiscales(reader: MetadataReader) -> list[dict[str, Any]] | None:
    """The ``multiscales`` list of an OME-Zarr group at the reader's location, or None."""
    v3 = reader.read_json("zarr.json")
    if v3 is not None:
        attributes = v3.get("attributes") or {}
        ome = attributes.get("ome") if isinstance(attributes, dict) else None
        multiscales = (ome or {}).get("multiscales") if isinstance(ome, dict) else None
        if multiscales is None and isinstance(attributes, dict):
            multiscales = attributes.get("multiscales")
        return multiscales if multiscales is not None else None
    v2 = reader.read_json(".zattrs")
    if v2 is not None and "multiscales" in v2:
        return v2["multiscales"]
    return None


def _scale_of(transforms: Any, ndim: int, location: str) -> list[float] | None:
    if transforms is None:
        return None
    if not isinstance(transforms, list):
        raise SourceError(f"{location}: corrupt OME metadata: coordinateTransformations")
    for transform in transforms:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            scale = transform.get("scale")
            if (
                not isinstance(scale, list)
                or len(scale) != ndim
                or not all(isinstance(v, int | float) and v > 0 for v in scale)
            ):
                raise SourceError(f"{location}: corrupt OME metadata: bad scale {scale!r}")
            return [float(v) for v in scale]
    return None


def _roles_and_units(axes: Any, ndim: int, location: str) -> tuple[list[str], list[float]]:
    if axes is None:
        if ndim > len(_DEFAULT_AXES):
            raise SourceError(f"{location}: corrupt OME metadata: {ndim}D array without axes")
        names: list[Any] = list(_DEFAULT_AXES[-ndim:])
    elif isinstance(axes, list) and len(axes) == ndim:
        names = axes
    else:
        raise SourceError(f"{location}: corrupt OME metadata: axes do not match the array rank")
    roles, factors = [], []
    for axis in names:
        if isinstance(axis, str):
            roles.append(role_of_axis_name(axis, location))
            factors.append(1.0)
            continue
        if not isinstance(axis, dict) or not isinstance(axis.get("name"), str):
            raise SourceError(f"{location}: corrupt OME metadata: axis {axis!r}")
        kind = axis.get("type")
        if kind == "channel":
            roles.append(CHANNEL)
        elif kind == "time":
            roles.append(DROPPED)
        else:
            roles.append(role_of_axis_name(axis["name"], location))
        unit = axis.get("unit") if kind in (None, "space") else None
        factors.append(nanometres_per_unit(unit, location) if roles[-1] in "zyx" else 1.0)
    return roles, factors


def open_ome_zarr(
    location: Location,
    *,
    voxel_size: Sequence[float] | None = None,
    reader: MetadataReader | None = None,
) -> MultiscaleVolume:
    """Open the first multiscale image of an OME-Zarr group.

    Parameters
    ----------
    location
        The group folder or URL.
    voxel_size
        Override (nm, z, y, x) for level 0; coarser levels keep their ratio to it.
    """
    shown = str(location)
    reader = reader or MetadataReader(location)
    multiscales = find_multiscales(reader)
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise SourceError(f"{shown}: corrupt OME metadata: no multiscales entry")
    multiscale = multiscales[0]
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise SourceError(f"{shown}: corrupt OME metadata: no datasets")

    levels: list[StoredArrayVolume] = []
    for dataset in datasets:
        path = dataset.get("path") if isinstance(dataset, dict) else None
        if not isinstance(path, str) or not path:
            raise SourceError(f"{shown}: corrupt OME metadata: dataset {dataset!r}")
        child = location.child(path)
        found = zarr_driver(MetadataReader(child))
        if found is None:
            raise SourceError(f"{shown}: pyramid level {path!r} is missing")
        store = open_tensorstore({"driver": found[0], "kvstore": child.kvstore_spec()}, shown)
        roles, unit_nm = _roles_and_units(multiscale.get("axes"), store.ndim, shown)
        scale = _scale_of(dataset.get("coordinateTransformations"), store.ndim, shown)
        outer = _scale_of(multiscale.get("coordinateTransformations"), store.ndim, shown)
        if scale is None:
            scale = [1.0] * store.ndim
        if outer is not None:
            scale = [a * b for a, b in zip(scale, outer, strict=True)]
        physical = [s * u for s, u in zip(scale, unit_nm, strict=True)]
        level = tensorstore_volume(
            store,
            roles,
            voxel_size=(1.0, 1.0, 1.0),
            key=f"ome-zarr:{location}/{path}",
            location=shown,
        )
        levels.append(level.with_voxel_size(level.layout.spatial_values(physical, 1.0)))

    name = multiscale.get("name") if isinstance(multiscale.get("name"), str) else None
    name = name or location.text.rstrip("/").rsplit("/", 1)[-1]
    return MultiscaleVolume(name, assemble_pyramid(name, levels, voxel_size, shown))
