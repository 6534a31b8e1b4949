"""The Neuroglancer precomputed protocol for lazy volumes: info, chunk names, raw encoding.

Pure functions, no HTTP: :mod:`ilastik_web.server.routes_precomputed` puts them on routes.

Chunk shapes: Neuroglancer offers every ``chunk_sizes`` entry of a scale as an
alternative source and, per panel, uses the alternative whose chunks hold the largest
cross-section of that panel's plane (alternative *i* across all scales together, picked
on the finest scale). So each scale lists the same three flat shapes in the same order —
one voxel thick across z, y and x — and each orthogonal panel fetches only the plane it
shows. 2D volumes get only the xy shape.
"""

from __future__ import annotations

import gzip
import re
from typing import Any

import numpy as np

from ilastik_web.abc import Box, LazyVolume, MultiscaleVolume
from ilastik_web.damage import read_tolerant
from ilastik_web.errors import (
    ChunkReadError,
    InvalidRequestError,
    NotFoundError,
    OutOfBoundsError,
)

#: Fast gzip: chunks are generated per request, so speed beats ratio.
GZIP_LEVEL = 1
# Bounded digit counts: Python refuses to parse integers of over 4,300 digits.
_CHUNK_NAME = re.compile(r"^(\d{1,12})-(\d{1,12})_(\d{1,12})-(\d{1,12})_(\d{1,12})-(\d{1,12})$")
_SCALE_KEY = re.compile(r"^s(\d{1,6})$")

# Neuroglancer's data types; others are converted to the nearest supported one.
_SUPPORTED = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "float32"}
_CONVERTED = {"bool": "uint8", "float16": "float32", "float64": "float32", "int64": "int32"}


def served_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype chunks are sent in: ``dtype`` itself, or the closest type Neuroglancer reads."""
    name = np.dtype(dtype).name
    if name in _SUPPORTED:
        return np.dtype(name)
    if name in _CONVERTED:
        return np.dtype(_CONVERTED[name])
    raise InvalidRequestError(f"data type {name} cannot be shown in Neuroglancer")


def scale_key(level: int) -> str:
    return f"s{level}"


def parse_scale_key(key: str, volume: MultiscaleVolume) -> int:
    """The level index of ``key`` (``"s0"``, ``"s1"``, ...).

    Raises
    ------
    NotFoundError
        ``key`` names no level of ``volume``.
    """
    match = _SCALE_KEY.match(key)
    if match is None or int(match.group(1)) >= len(volume):
        raise NotFoundError(
            f"no scale {key!r}; this volume has s0..s{len(volume) - 1}"
        )
    return int(match.group(1))


def chunk_sizes(level: LazyVolume, *, flat_2d: bool) -> list[list[int]]:
    """The chunk shapes ([x, y, z]) advertised for ``level``, clipped to its size.

    Parameters
    ----------
    level
        The pyramid level.
    flat_2d
        True for a 2D volume (z == 1 at full resolution): only the xy shape.
    """
    z, y, x = level.shape
    bytes_per_voxel = level.num_channels * served_dtype(level.dtype).itemsize
    edge = 256 if bytes_per_voxel <= 4 else 128
    shapes = [(edge, edge, 1)] if flat_2d else [(edge, edge, 1), (edge, 1, edge), (1, edge, edge)]
    return [[min(cx, x), min(cy, y), min(cz, z)] for cx, cy, cz in shapes]


def is_2d(volume: MultiscaleVolume) -> bool:
    return volume.base.shape[0] == 1


def info(volume: MultiscaleVolume, *, kind: str) -> dict[str, Any]:
    """The precomputed ``info`` document for ``volume`` (every pyramid level)."""
    base = volume.base
    if kind == "segmentation" and base.num_channels != 1:
        raise InvalidRequestError(
            f"a segmentation layer needs one channel, {volume.name!r} has {base.num_channels}"
        )
    flat = is_2d(volume)
    scales = []
    for index, level in enumerate(volume.levels):
        z, y, x = level.shape
        vz, vy, vx = level.voxel_size
        scales.append(
            {
                "key": scale_key(index),
                "size": [x, y, z],
                "resolution": [vx, vy, vz],
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": chunk_sizes(level, flat_2d=flat),
                "encoding": "raw",
            }
        )
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": kind,
        "data_type": served_dtype(base.dtype).name,
        "num_channels": base.num_channels,
        "scales": scales,
    }


def parse_chunk_name(name: str) -> Box:
    """Parse ``x0-x1_y0-y1_z0-z1`` into a (z, y, x) box.

    Raises
    ------
    InvalidRequestError
        The name is malformed or describes an empty box.
    """
    match = _CHUNK_NAME.match(name)
    if match is None:
        raise InvalidRequestError(
            f"malformed chunk name {name!r}: expected x0-x1_y0-y1_z0-z1 with integers"
        )
    x0, x1, y0, y1, z0, z1 = (int(v) for v in match.groups())
    if x1 <= x0 or y1 <= y0 or z1 <= z0:
        raise InvalidRequestError(f"chunk {name!r} is empty or reversed")
    return Box((z0, y0, x0), (z1, y1, x1))


def check_chunk_box(box: Box, level: LazyVolume, sizes: list[list[int]]) -> None:
    """Check that ``box`` is one chunk of one of the advertised grids of ``level``.

    A chunk begins on a multiple of the chunk shape and ends at
    ``min(begin + chunk, size)`` on every axis.

    Raises
    ------
    OutOfBoundsError
        The box reaches outside the level.
    InvalidRequestError
        The box is inside but not on any advertised chunk grid.
    """
    if not level.bounds.contains(box):
        raise OutOfBoundsError(
            f"chunk {chunk_name(box)} is outside the volume of size (x, y, z) "
            f"{tuple(reversed(level.shape))}"
        )
    for size_xyz in sizes:
        chunk = tuple(reversed(size_xyz))  # (z, y, x)
        if all(
            a % c == 0 and b == min(a + c, s)
            for a, b, c, s in zip(box.start, box.stop, chunk, level.shape, strict=True)
        ):
            return
    raise InvalidRequestError(
        f"chunk {chunk_name(box)} is not on the chunk grid; chunk sizes (x, y, z) are {sizes}"
    )


def chunk_name(box: Box) -> str:
    """The chunk name of a (z, y, x) box, as Neuroglancer requests it."""
    (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
    return f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"


def encode_chunk(data: np.ndarray) -> bytes:
    """Raw encoding: little-endian C-order bytes of a (c, z, y, x) array."""
    dtype = served_dtype(data.dtype).newbyteorder("<")
    return np.ascontiguousarray(data, dtype=dtype).tobytes()


def read_chunk(
    volume: MultiscaleVolume, level: int, box: Box, *, gzipped: bool
) -> tuple[bytes, tuple[ChunkReadError, ...]]:
    """Read, encode and optionally gzip one chunk (blocking; run it in a worker thread).

    Returns the body and the read failures: parts of the chunk whose stored data could
    not be read are sent as zeros, so one bad storage chunk blanks only its own region.
    """
    result = read_tolerant(volume.levels[level], box)
    body = encode_chunk(result.data)
    if gzipped:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return body, result.errors
