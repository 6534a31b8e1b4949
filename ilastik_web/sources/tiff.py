"""TIFF, OME-TIFF and ImageJ hyperstacks read with tifffile (first image series).

Reading strategy: a series stored contiguously and uncompressed is memory-mapped
(``tifffile.memmap``), so a box reads only its own bytes and threads need no lock. Any
other series (compressed, tiled, strips) is read through tifffile's zarr view
(``aszarr``), which decodes only the pages/tiles a box touches; those reads share one
file handle and are serialised by a lock.

Axes come from tifffile's series axes (``C``/``S`` → c, ``Z`` (or ``Q``/``I`` for a plain
page stack) → z, ``T`` read at t = 0). Voxel size: OME ``PhysicalSize{X,Y,Z}`` with their
units (µm by default), or ImageJ ``spacing`` plus the X/YResolution tags; else 1 nm.
"""

from __future__ import annotations

import threading
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
import zarr

from ilastik_web.errors import SourceError
from ilastik_web.sources._common import (
    CHANNEL,
    DROPPED,
    AxisLayout,
    StoredArrayVolume,
    check_dtype,
    nanometres_per_unit,
)

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def looks_like_tiff(path: Path) -> bool:
    if path.suffix.lower() in TIFF_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) in TIFF_SIGNATURES
    except OSError:
        return False


def _roles(axes: str, shape: Sequence[int], shown: str) -> list[str]:
    has_z = "Z" in axes
    roles: list[str] = []
    for axis, size in zip(axes, shape, strict=True):
        if axis in "XY":
            role = axis.lower()
        elif axis == "Z" or (axis in "QI" and not has_z and "z" not in roles):
            role = "z"
        elif axis in "CS" and CHANNEL not in roles:
            role = CHANNEL
        elif axis == "T" or size == 1:
            role = DROPPED
        else:
            raise SourceError(f"{shown}: cannot interpret TIFF axis {axis!r} in {axes!r}")
        roles.append(role)
    return roles


def _ome_voxel_size(ome_xml: str, shown: str) -> tuple[float, float, float] | None:
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        raise SourceError(f"{shown}: corrupt OME-XML metadata") from None
    pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    sizes = []
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        try:
            sizes.append(float(value) * nanometres_per_unit(unit, shown) if value else 1.0)
        except ValueError:
            raise SourceError(f"{shown}: corrupt OME-XML PhysicalSize{axis} {value!r}") from None
    return (sizes[0], sizes[1], sizes[2])


def _imagej_voxel_size(tif: tifffile.TiffFile, shown: str) -> tuple[float, float, float] | None:
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).replace("\\u00B5", "µ")
    try:
        per_unit = nanometres_per_unit(unit, shown)
    except SourceError:
        return None
    tags = tif.pages.first.tags
    sizes = []
    for name in ("YResolution", "XResolution"):
        tag = tags.get(name)
        if tag is None:
            return None
        numerator, denominator = tag.value
        sizes.append(per_unit * denominator / numerator if numerator else 1.0)
    spacing = float(meta.get("spacing", 1.0)) * per_unit
    return (spacing, sizes[0], sizes[1])


def open_tiff(
    file: Path, *, voxel_size: Sequence[float] | None = None, shown: str
) -> StoredArrayVolume:
    """Open the first series of a TIFF file lazily."""
    try:
        tif = tifffile.TiffFile(file)
    except Exception as exc:
        raise SourceError(f"{shown}: not a readable TIFF file ({exc})") from None
    try:
        series = tif.series[0]
        dtype = check_dtype(series.dtype, shown)
        layout = AxisLayout.create(series.shape, _roles(series.axes, series.shape, shown), shown)
        if voxel_size is None:
            found = None
            if tif.is_ome and tif.ome_metadata:
                found = _ome_voxel_size(tif.ome_metadata, shown)
            elif tif.is_imagej:
                found = _imagej_voxel_size(tif, shown)
            voxel_size = found or (1.0, 1.0, 1.0)
        lock: threading.Lock | None = None
        if series.dataoffset is not None:
            array = tifffile.memmap(file, series=0, mode="r")
            roles_and_sizes = zip(layout.roles, series.shape, strict=True)
            chunks = tuple(1 if r == "z" else s for r, s in roles_and_sizes)
        else:
            array = zarr.open(series.aszarr(), mode="r")
            chunks = array.chunks
            lock = threading.Lock()
    except SourceError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise SourceError(f"{shown}: unreadable TIFF ({exc})") from None

    def read_index(index: tuple[slice | int, ...]) -> np.ndarray:
        return np.asarray(array[index])

    volume = StoredArrayVolume(
        read_index,
        layout,
        dtype=dtype,
        voxel_size=voxel_size,
        chunk_shape=layout.chunk_shape(chunks),
        key=f"tiff:{file}",
        location=shown,
        lock=lock,
    )
    weakref.finalize(read_index, tif.close)
    return volume
