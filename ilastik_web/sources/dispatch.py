"""``open_source``: detect a location's format and open it as a multiscale volume."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ilastik_web.abc import LazyVolume, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import SourceError
from ilastik_web.pyramid import build_pyramid
from ilastik_web.sources import hdf5, n5, ome_zarr, precomputed, procedural, tiff, zarr_array
from ilastik_web.sources.location import Location, MetadataReader, check_allowed, parse_location

logger = logging.getLogger(__name__)

#: Bytes budget of the cache a built pyramid gets when the caller passes none.
DEFAULT_CACHE_BYTES = 512 * 2**20


def _check_voxel_size(voxel_size: Sequence[float] | None, shown: str) -> tuple | None:
    if voxel_size is None:
        return None
    values = tuple(float(v) for v in voxel_size)
    if len(values) != 3 or not all(v > 0 and v < float("inf") for v in values):
        raise SourceError(f"{shown}: voxel size override must be three positive numbers (z,y,x)")
    return values


def _name_of(location: Location) -> str:
    return location.text.rstrip("/").rsplit("/", 1)[-1] or location.text


def _is_bioformats2raw(reader: MetadataReader) -> bool:
    """True for a bioformats2raw layout, whose first image is the group ``0``."""
    v3 = reader.read_json("zarr.json") or {}
    attributes = v3.get("attributes") if isinstance(v3.get("attributes"), dict) else {}
    ome = attributes.get("ome") if isinstance(attributes.get("ome"), dict) else {}
    v2 = reader.read_json(".zattrs") or {}
    return any("bioformats2raw.layout" in a for a in (attributes, ome, v2))


def _open_folder(location: Location, voxel_size: tuple | None) -> MultiscaleVolume | LazyVolume:
    """A folder or URL: OME-Zarr, zarr array, precomputed, N5 dataset or N5 pyramid."""
    reader = MetadataReader(location)
    if ome_zarr.find_multiscales(reader) is not None:
        return ome_zarr.open_ome_zarr(location, voxel_size=voxel_size, reader=reader)
    found = zarr_array.zarr_driver(reader)
    if found is not None:
        return zarr_array.open_zarr_array(location, voxel_size=voxel_size, reader=reader)
    info = reader.read_json("info")
    if info is not None:
        return precomputed.open_precomputed(location, info, voxel_size=voxel_size)
    attributes = reader.read_json("attributes.json")
    if n5.is_n5_dataset(attributes):
        assert attributes is not None
        return n5.open_n5_dataset(location, attributes, voxel_size=voxel_size)
    pyramid = n5.open_n5_multiscale(location, voxel_size=voxel_size)
    if pyramid is not None:
        return pyramid
    in_n5 = location.path is not None and any(
        part.endswith(".n5") for part in location.path.parts)
    if location.path is not None and (attributes is not None or in_n5):
        return _open_n5_container(location, voxel_size)
    zarr_group = reader.read_json("zarr.json") or reader.read_json(".zgroup")
    if _is_bioformats2raw(reader):
        return _open_folder(location.child("0"), voxel_size)
    if zarr_group is not None:
        raise SourceError(f"{location}: a zarr group without OME multiscales metadata; "
                          "open one of its arrays")
    raise SourceError(f"{location}: unsupported format (no OME-Zarr, zarr, N5 or "
                      "precomputed metadata found)")


def _open_n5_container(
    location: Location, voxel_size: tuple | None
) -> MultiscaleVolume | LazyVolume:
    """An N5 container (or group) holding datasets deeper down: its one image, else an
    error listing them."""
    images = n5.find_n5_images(location)
    if not images:
        raise SourceError(f"{location}: an N5 container without datasets")
    if len(images) > 1:
        listed = ", ".join(images[:8]) + (f" and {len(images) - 8} more" if len(images) > 8
                                          else "")
        raise SourceError(f"{location}: the N5 container holds several datasets ({listed}); "
                          "name one as container.n5/path")
    return _open_folder(location.child(images[0]), voxel_size)


def _open_local(
    location: Location, voxel_size: tuple | None, allowed_roots: Sequence[Path] | None
) -> MultiscaleVolume | LazyVolume:
    path = location.path
    assert path is not None
    shown = str(location)
    split = hdf5.split_hdf5_path(path)
    check_allowed(split[0] if split else path, allowed_roots, shown)
    if split is not None:
        return hdf5.open_hdf5(split[0], split[1], voxel_size=voxel_size, shown=shown)
    if path.is_dir():
        return _open_folder(location, voxel_size)
    if path.is_file():
        if tiff.looks_like_tiff(path):
            return tiff.open_tiff(path, voxel_size=voxel_size, shown=shown)
        raise SourceError(f"{shown}: unsupported file format")
    raise SourceError(f"{shown}: no such file or directory")


def open_source(
    location: str,
    *,
    voxel_size: tuple[float, float, float] | None = None,
    allowed_roots: Sequence[Path] | None = None,
    cache: ArrayCache | None = None,
) -> MultiscaleVolume:
    """Open a data source lazily as a pyramid of lazy volumes.

    Parameters
    ----------
    location
        A local path or http(s) URL of an OME-Zarr group, zarr v2/v3 array, N5 dataset
        (or N5 ``s0``/``s1``… group), Neuroglancer precomputed volume (folder/URL with
        ``info``), an HDF5 file (``file.h5`` with one image dataset, or
        ``file.h5/inner/dataset``), a TIFF/OME-TIFF file; or ``procedural:[key=value,...]``
        for the synthetic terabyte volume (see :mod:`ilastik_web.sources.procedural`).
    voxel_size
        Override (nm, z, y, x) of the metadata's voxel size, which is otherwise read from
        the format (1 nm per axis when the format has none).
    allowed_roots
        When given, a local path that resolves (symlinks included) outside every root is
        refused with ForbiddenError. URLs and ``procedural:`` are not paths.
    cache
        Cache for the blocks of a pyramid built for sources without a native one; a
        512 MiB cache of the pyramid's own when None.

    Raises
    ------
    SourceError
        One line naming the location and the problem (missing, unsupported format,
        corrupt metadata, unsupported dtype).
    ForbiddenError
        For a local path outside ``allowed_roots``.
    """
    if not isinstance(location, str) or not location.strip():
        raise SourceError("empty source location")
    text = location.strip()
    voxel = _check_voxel_size(voxel_size, text)
    if text.startswith(procedural.SCHEME):
        return procedural.open_procedural(text, voxel_size=voxel)
    parsed = parse_location(text)
    if parsed.is_remote:
        if parsed.text.lower().rsplit("/", 1)[-1].endswith(hdf5.HDF5_SUFFIXES + tiff.TIFF_SUFFIXES):
            raise SourceError(f"{parsed}: HDF5 and TIFF are supported only as local files")
        opened = _open_folder(parsed, voxel)
    else:
        opened = _open_local(parsed, voxel, allowed_roots)
    if isinstance(opened, MultiscaleVolume):
        return opened
    logger.debug("building a pyramid for %s", opened.key)
    # Without a cache of the caller's, the pyramid owns one (no process-wide cache).
    cache = cache if cache is not None else ArrayCache(DEFAULT_CACHE_BYTES)
    return build_pyramid(opened, cache=cache, name=_name_of(parsed))
