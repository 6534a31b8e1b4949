"""HDF5 datasets read with h5py: ``file.h5`` (its single image dataset) or
``file.h5/inner/dataset``.

Axes come from a vigra/ilastik ``axistags`` attribute when present, else from the shape
heuristics. Voxel size: the ``element_size_um`` attribute (µm, one entry per spatial
axis or per axis) when present, else 1 nm per axis. h5py reads only the chunks (or, for
contiguous datasets, the bytes) a box touches and serialises calls on its global lock.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ilastik_web.errors import SourceError
from ilastik_web.sources._common import (
    SPATIAL,
    AxisLayout,
    StoredArrayVolume,
    check_dtype,
    guess_roles,
    role_of_axis_name,
)

logger = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".ilp")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_CONTIGUOUS_BLOCK = 64


def split_hdf5_path(path: Path) -> tuple[Path, str] | None:
    """(file, inner dataset path) when ``path`` is an HDF5 file or a path inside one."""
    for candidate in (path, *path.parents):
        if candidate.is_file():
            if not _looks_like_hdf5(candidate):
                return None
            inner = path.relative_to(candidate).as_posix()
            return candidate, "" if inner == "." else inner
    return None


def _looks_like_hdf5(path: Path) -> bool:
    if path.suffix.lower() in HDF5_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _image_datasets(group: h5py.Group) -> list[str]:
    found: list[str] = []

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Dataset) and 2 <= node.ndim <= 5:
            found.append(name)

    group.visititems(visit)
    return found


def _roles(dataset: h5py.Dataset, shown: str) -> list[str]:
    tags = dataset.attrs.get("axistags")
    if tags is not None:
        try:
            axes = json.loads(tags)["axes"]
            keys = [a["key"] for a in axes]
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"{shown}: corrupt axistags attribute") from None
        if len(keys) == dataset.ndim:
            return [role_of_axis_name(k, shown) for k in keys]
    return list(guess_roles(dataset.shape, shown))


def _voxel_size(dataset: h5py.Dataset, layout: AxisLayout, shown: str) -> tuple[float, ...]:
    sizes = dataset.attrs.get("element_size_um")
    if sizes is None:
        return (1.0, 1.0, 1.0)
    values = np.atleast_1d(np.asarray(sizes, dtype=float)).tolist()
    spatial_roles = [r for r in layout.roles if r in SPATIAL]
    if len(values) == len(layout.roles):
        per_axis = values
    elif len(values) == len(spatial_roles):
        lookup = dict(zip(spatial_roles, values, strict=True))
        per_axis = [lookup.get(r, 1.0) for r in layout.roles]
    else:
        raise SourceError(f"{shown}: element_size_um {values} does not match the axes")
    return tuple(v * 1e3 for v in layout.spatial_values(per_axis, 1e-3))


def open_hdf5(
    file: Path, inner: str, *, voxel_size: Sequence[float] | None = None, shown: str
) -> StoredArrayVolume:
    """Open ``inner`` (or the file's only image dataset when empty) of HDF5 ``file``."""
    try:
        handle = h5py.File(file, "r")
    except OSError as exc:
        raise SourceError(f"{shown}: not a readable HDF5 file ({exc})") from None
    try:
        if not inner:
            names = _image_datasets(handle)
            if not names:
                raise SourceError(f"{shown}: the HDF5 file holds no 2D-5D dataset")
            if len(names) > 1:
                listed = ", ".join(names[:5])
                raise SourceError(
                    f"{shown}: the HDF5 file holds several datasets ({listed}); "
                    "name one as file.h5/inner/path"
                )
            inner = names[0]
        node = handle.get(inner)
        if not isinstance(node, h5py.Dataset):
            raise SourceError(f"{shown}: no dataset {inner!r} in the HDF5 file")
        dtype = check_dtype(node.dtype, shown)
        layout = AxisLayout.create(node.shape, _roles(node, shown), shown)
        chunks = node.chunks or tuple(min(s, _CONTIGUOUS_BLOCK) for s in node.shape)
        voxel = voxel_size if voxel_size is not None else _voxel_size(node, layout, shown)
    except BaseException:
        handle.close()
        raise

    def read_index(index: tuple[slice | int, ...]) -> np.ndarray:
        return node[index]

    volume = StoredArrayVolume(
        read_index,
        layout,
        dtype=dtype,
        voxel_size=voxel,
        chunk_shape=layout.chunk_shape(chunks),
        key=f"hdf5:{file}/{inner.lstrip('/')}",
        location=shown,
    )
    weakref.finalize(read_index, handle.close)
    return volume
