"""N5 datasets, and N5 multiscale groups (``s0``, ``s1``, … with ``downsamplingFactors``).

N5 lists dimensions fastest-first (x, y, z); tensorstore keeps that order, so without an
``axes`` attribute the axes are read reversed through the shape heuristics (a small
last-listed axis is a channel). Voxel size: ``resolution`` (with ``units``) or
``pixelResolution`` (``dimensions`` and one ``unit``), same order as ``dimensions``;
1 nm per axis when absent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.errors import SourceError
from ilastik_web.sources._common import (
    StoredArrayVolume,
    guess_roles,
    nanometres_per_unit,
    role_of_axis_name,
)
from ilastik_web.sources._tensorstore import open_tensorstore, tensorstore_volume
from ilastik_web.sources.location import Location, MetadataReader

logger = logging.getLogger(__name__)

#: Folder depth searched below an N5 container for its datasets and multiscale groups.
SEARCH_DEPTH = 4


def _inferred_factors(base: Sequence[int], level: Sequence[int]) -> tuple[int, ...] | None:
    """Per-axis integer factors that shrink ``base`` to ``level`` (rounding up or down)."""
    factors = []
    for b, s in zip(base, level, strict=True):
        f = max(1, round(b / s))
        if s not in (b // f, -(-b // f)):
            return None
        factors.append(f)
    return tuple(factors)


def is_n5_dataset(attributes: dict[str, Any] | None) -> bool:
    return attributes is not None and "dimensions" in attributes and "dataType" in attributes


def _roles(attributes: dict[str, Any], shape: Sequence[int], shown: str) -> list[str]:
    axes = attributes.get("axes")
    if isinstance(axes, list) and len(axes) == len(shape) and all(isinstance(a, str) for a in axes):
        return [role_of_axis_name(a, shown) for a in axes]
    return list(reversed(guess_roles(tuple(reversed(shape)), shown)))


def _physical_voxel(attributes: dict[str, Any], ndim: int, shown: str) -> list[float] | None:
    pixel = attributes.get("pixelResolution")
    if isinstance(pixel, dict):
        values, units = pixel.get("dimensions"), [pixel.get("unit")] * ndim
    else:
        values, units = attributes.get("resolution"), attributes.get("units") or [None] * ndim
    if values is None:
        return None
    if (
        not isinstance(values, list)
        or len(values) != ndim
        or not isinstance(units, list)
        or len(units) != ndim
        or not all(isinstance(v, int | float) and v > 0 for v in values)
    ):
        raise SourceError(f"{shown}: corrupt N5 metadata: resolution {values!r}")
    return [float(v) * nanometres_per_unit(u, shown) for v, u in zip(values, units, strict=True)]


def open_n5_dataset(
    location: Location,
    attributes: dict[str, Any],
    *,
    voxel_size: Sequence[float] | None = None,
    shown: str | None = None,
) -> StoredArrayVolume:
    """Open one N5 dataset (a folder or URL with ``attributes.json``)."""
    shown = shown or str(location)
    store = open_tensorstore({"driver": "n5", "kvstore": location.kvstore_spec()}, shown)
    roles = _roles(attributes, store.shape, shown)
    volume = tensorstore_volume(
        store, roles, voxel_size=(1.0, 1.0, 1.0), key=f"n5:{location}", location=shown
    )
    if voxel_size is None:
        physical = _physical_voxel(attributes, store.ndim, shown)
        voxel_size = volume.layout.spatial_values(physical, 1.0) if physical else (1.0, 1.0, 1.0)
    return volume.with_voxel_size(voxel_size)


def open_n5_multiscale(
    location: Location, *, voxel_size: Sequence[float] | None = None
) -> MultiscaleVolume | None:
    """The pyramid of an N5 group holding ``s0``, ``s1``, …; None if there is no ``s0``."""
    shown = str(location)
    levels: list[StoredArrayVolume] = []
    while True:
        child = location.child(f"s{len(levels)}")
        attributes = MetadataReader(child).read_json("attributes.json")
        if not is_n5_dataset(attributes):
            break
        assert attributes is not None
        level = open_n5_dataset(child, attributes, shown=shown)
        if levels:
            factors = attributes.get("downsamplingFactors")
            if factors is None:  # tensorstore and others write none: infer from the shapes
                zyx = _inferred_factors(levels[0].shape, level.shape)
                if zyx is None:
                    logger.warning("%s: skipping s%d: shape %s is no integer downsampling of "
                                   "%s and has no downsamplingFactors", shown, len(levels),
                                   level.shape, levels[0].shape)
                    break
            elif not isinstance(factors, list) or len(factors) != len(level.layout.roles):
                raise SourceError(f"{shown}: corrupt N5 metadata: downsamplingFactors of "
                                  f"s{len(levels)} is {factors!r}")
            else:
                zyx = level.layout.spatial_values(factors, 1.0)
            level = level.with_voxel_size(
                [v * f for v, f in zip(levels[0].voxel_size, zyx, strict=True)]
            )
        levels.append(level)
    if not levels:
        return None
    if voxel_size is not None:
        ratios = [
            [v / b for v, b in zip(level.voxel_size, levels[0].voxel_size, strict=True)]
            for level in levels
        ]
        levels = [
            level.with_voxel_size([t * r for t, r in zip(voxel_size, ratio, strict=True)])
            for level, ratio in zip(levels, ratios, strict=True)
        ]
    return MultiscaleVolume(location.text.rstrip("/").rsplit("/", 1)[-1], levels)


def find_n5_images(root: Location) -> list[str]:
    """Paths (relative to local folder ``root``) of the N5 datasets and multiscale groups
    (``s0``, ``s1``, …) inside it, a group counting once; sorted."""
    assert root.path is not None

    def dataset_at(relative: str) -> bool:
        folder = root.path / relative
        return is_n5_dataset(MetadataReader(Location(str(folder), path=folder))
                             .read_json("attributes.json"))

    found: list[str] = []
    for folder, subfolders, _ in os.walk(root.path):
        relative = os.path.relpath(folder, root.path)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        if depth >= SEARCH_DEPTH:
            subfolders.clear()
        if depth == 0:
            continue
        if ("s0" in subfolders and dataset_at(os.path.join(relative, "s0"))) or \
                dataset_at(relative):
            found.append(relative.replace(os.sep, "/"))
            subfolders.clear()
    return sorted(found)
