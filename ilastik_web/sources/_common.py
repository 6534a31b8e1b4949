"""Pieces every file-backed source shares: axis layouts, units, dtypes, the volume class.

A stored array has its own axis order (``tczyx`` for OME-Zarr, ``xyz`` for N5,
``xyzc`` for precomputed, anything for HDF5/TIFF). :class:`AxisLayout` records which
stored axis plays which role and turns a (z, y, x) box into an index on the stored
array and the result back into the package's (c, z, y, x) convention.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.errors import ChunkReadError, SourceError

logger = logging.getLogger(__name__)

SPATIAL = ("z", "y", "x")
CHANNEL = "c"
DROPPED = "drop"  # an axis read at index 0 (time, a singleton leading axis)

#: Most storage chunks re-read one by one to find which of them failed.
MAX_PROBED_CHUNKS = 16

#: Largest axis length the heuristics take for a channel axis when no names say so.
MAX_GUESSED_CHANNELS = 4

SUPPORTED_DTYPES = tuple(
    np.dtype(name)
    for name in (
        "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
        "float32", "float64",
    )
)

_NANOMETRES_PER_UNIT = {
    "": 1.0,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micrometer": 1e3, "micrometre": 1e3, "micron": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "cm": 1e7, "centimeter": 1e7, "centimetre": 1e7,
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "pm": 1e-3, "picometer": 1e-3, "picometre": 1e-3,
    "a": 0.1, "å": 0.1, "angstrom": 0.1,
}

_AXIS_NAME_ROLES = {
    "c": CHANNEL, "ch": CHANNEL, "channel": CHANNEL, "channels": CHANNEL, "s": CHANNEL,
    "z": "z", "y": "y", "x": "x",
    "t": DROPPED, "time": DROPPED,
}


def nanometres_per_unit(unit: str | None, location: str) -> float:
    """Nanometres in one ``unit`` (OME/UDUNITS names and common abbreviations).

    A missing unit counts as nanometres.
    """
    name = (unit or "").strip().lower()
    try:
        return _NANOMETRES_PER_UNIT[name]
    except KeyError:
        raise SourceError(f"{location}: unsupported spatial unit {unit!r}") from None


def check_dtype(dtype: np.dtype, location: str) -> np.dtype:
    """Return ``dtype`` (native byte order) or raise SourceError when it is unsupported."""
    dtype = np.dtype(dtype)
    native = dtype.newbyteorder("=")
    if native not in SUPPORTED_DTYPES:
        raise SourceError(f"{location}: unsupported data type {dtype}")
    return native


def short_reason(exc: BaseException) -> str:
    """The first line of an exception message, without tensorstore's spec dump."""
    text = str(exc).split(" [tensorstore_spec=")[0].strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: tensorstore's "<CODE>: Error reading <file or URL>: " before the cause; the file is
#: named by the chunk box already.
_READ_PREFIX = re.compile(r'^[A-Z_]+: Error reading (?:local file "[^"]*"|\S+): ')


def _reason(exc: BaseException) -> str:
    """Why a read failed, in a few words (``Truncated Zstd-compressed stream; …``)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {exc.args[0] if exc.args else '?'} s"
    return _READ_PREFIX.sub("", short_reason(exc))


def role_of_axis_name(name: str, location: str) -> str:
    try:
        return _AXIS_NAME_ROLES[name.strip().lower()]
    except KeyError:
        raise SourceError(f"{location}: unsupported axis {name!r}") from None


def guess_roles(shape: Sequence[int], location: str) -> tuple[str, ...]:
    """Axis roles for an array stored in C order without axis names.

    Rules: 2D is (y, x); 3D is (z, y, x) unless the first axis (then c, y, x) or the last
    axis (then y, x, c) has at most :data:`MAX_GUESSED_CHANNELS` entries while the other
    axes are larger; 4D is (c, z, y, x) unless only the last axis is that small
    (z, y, x, c); leading singleton axes beyond 4D are dropped.
    """
    shape = tuple(int(s) for s in shape)
    small = [s <= MAX_GUESSED_CHANNELS for s in shape]
    if len(shape) > 4 and all(s == 1 for s in shape[: len(shape) - 4]):
        return (DROPPED,) * (len(shape) - 4) + guess_roles(shape[-4:], location)
    if len(shape) == 2:
        return ("y", "x")
    if len(shape) == 3:
        if small[0] and not small[1] and not small[2]:
            return (CHANNEL, "y", "x")
        if small[2] and not small[0] and not small[1]:
            return ("y", "x", CHANNEL)
        return ("z", "y", "x")
    if len(shape) == 4:
        if small[3] and not small[0]:
            return ("z", "y", "x", CHANNEL)
        return (CHANNEL, "z", "y", "x")
    raise SourceError(f"{location}: cannot interpret a {len(shape)}D array of shape {shape}")


@dataclass(frozen=True)
class AxisLayout:
    """Which role each stored axis plays: one of ``c``, ``z``, ``y``, ``x`` or ``drop``.

    Parameters
    ----------
    stored_shape
        Shape of the stored array, in its own axis order.
    roles
        One role per stored axis; ``y`` and ``x`` are required, ``c`` and ``z`` optional,
        each role at most once. A ``drop`` axis is read at index 0.
    """

    stored_shape: tuple[int, ...]
    roles: tuple[str, ...]

    @classmethod
    def create(cls, stored_shape: Sequence[int], roles: Sequence[str], location: str) -> AxisLayout:
        stored_shape = tuple(int(s) for s in stored_shape)
        roles = tuple(roles)
        if len(roles) != len(stored_shape):
            raise SourceError(
                f"{location}: {len(roles)} axis names for a {len(stored_shape)}D array"
            )
        for role in (CHANNEL, *SPATIAL):
            if roles.count(role) > 1:
                raise SourceError(f"{location}: axis {role!r} appears more than once")
        if "y" not in roles or "x" not in roles:
            raise SourceError(f"{location}: the array needs y and x axes, found {roles}")
        if any(s == 0 for s in stored_shape):
            raise SourceError(f"{location}: the array is empty, shape {stored_shape}")
        return cls(stored_shape, roles)

    def _size(self, role: str) -> int:
        return self.stored_shape[self.roles.index(role)] if role in self.roles else 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._size("z"), self._size("y"), self._size("x"))

    @property
    def num_channels(self) -> int:
        return self._size(CHANNEL)

    def spatial_values(self, per_axis: Sequence[float], default: float) -> tuple[float, ...]:
        """Pick the (z, y, x) entries of a per-stored-axis sequence; ``default`` if absent."""
        return tuple(
            float(per_axis[self.roles.index(r)]) if r in self.roles else default for r in SPATIAL
        )

    def index(self, box: Box) -> tuple[slice | int, ...]:
        """The stored-array index that selects ``box`` (all channels)."""
        by_role = dict(zip(SPATIAL, box.slices, strict=True))
        out: list[slice | int] = []
        for role in self.roles:
            if role == DROPPED:
                out.append(0)
            elif role == CHANNEL:
                out.append(slice(None))
            else:
                out.append(by_role[role])
        return tuple(out)

    def to_czyx(self, stored: np.ndarray, box: Box) -> np.ndarray:
        """Reorder what :meth:`index` selected into (c, z, y, x)."""
        kept = [r for r in self.roles if r != DROPPED]
        order = [kept.index(r) for r in (CHANNEL, *SPATIAL) if r in kept]
        data = np.transpose(stored, order)
        return data.reshape((self.num_channels, *box.shape))

    def chunk_shape(self, stored_chunks: Sequence[int] | None) -> tuple[int, int, int]:
        """Storage chunking mapped to (z, y, x); the whole axis when unchunked."""
        if stored_chunks is None:
            return self.shape
        chunks = dict(zip(self.roles, stored_chunks, strict=True))
        return tuple(  # type: ignore[return-value]
            max(1, min(int(chunks.get(r, 1)), s)) for r, s in zip(SPATIAL, self.shape, strict=True)
        )


class StoredArrayVolume(LazyVolume):
    """A lazy volume over one stored array, read through ``read_index``.

    Parameters
    ----------
    read_index
        Reads the stored array at an index of slices and integers, returning a numpy
        array; must be thread-safe (pass ``lock`` otherwise).
    layout
        How the stored axes map to (c, z, y, x).
    dtype, voxel_size, chunk_shape, key
        Metadata of the volume (voxel size in nm, z, y, x).
    location
        Named in error messages.
    lock
        Serialises reads for backends that are not thread-safe.
    """

    def __init__(
        self,
        read_index: Callable[[tuple[slice | int, ...]], np.ndarray],
        layout: AxisLayout,
        *,
        dtype: np.dtype,
        voxel_size: Sequence[float],
        chunk_shape: Sequence[int],
        key: str,
        location: str,
        lock: threading.Lock | None = None,
    ):
        self._read_index = read_index
        self.layout = layout
        self._dtype = check_dtype(dtype, location)
        vz, vy, vx = (float(v) for v in voxel_size)
        if not all(np.isfinite(v) and v > 0 for v in (vz, vy, vx)):
            raise SourceError(f"{location}: voxel size must be positive, got {tuple(voxel_size)}")
        self._voxel_size = (vz, vy, vx)
        cz, cy, cx = (int(c) for c in chunk_shape)
        self._chunk_shape = (cz, cy, cx)
        self._key = key
        self.location = location
        self._lock = lock

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.layout.shape

    @property
    def num_channels(self) -> int:
        return self.layout.num_channels

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self._voxel_size

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        return self._chunk_shape

    @property
    def key(self) -> str:
        return self._key

    def with_voxel_size(self, voxel_size: Sequence[float]) -> StoredArrayVolume:
        """The same data with another voxel size (for a command-line override)."""
        return StoredArrayVolume(
            self._read_index,
            self.layout,
            dtype=self._dtype,
            voxel_size=voxel_size,
            chunk_shape=self._chunk_shape,
            key=self._key,
            location=self.location,
            lock=self._lock,
        )

    def _read(self, box: Box) -> np.ndarray:
        if box.is_empty:
            return np.zeros((self.num_channels, *box.shape), self._dtype)
        try:
            stored = self._read_stored(box)
        except SourceError:
            raise
        except Exception as exc:
            raise ChunkReadError(
                self.location, self._failed_chunks(box, exc), _reason(exc)
            ) from exc
        return self.layout.to_czyx(np.asarray(stored), box)

    def _read_stored(self, box: Box) -> np.ndarray:
        index = self.layout.index(box)
        if self._lock is None:
            return self._read_index(index)
        with self._lock:
            return self._read_index(index)

    def _failed_chunks(self, box: Box, error: Exception) -> list[Box]:
        """The storage chunks of ``box`` that fail on their own (``box`` if unknown).

        A timeout is not probed chunk by chunk: each probe could wait as long again.
        """
        cells = [
            cell.intersect(self.bounds)
            for cell in (
                Box(tuple(p.start[i] // c * c for i, c in enumerate(self._chunk_shape)),
                    tuple(p.start[i] // c * c + c for i, c in enumerate(self._chunk_shape)))
                for p in box.chunks(self._chunk_shape)
            )
        ]
        if isinstance(error, TimeoutError) or not 1 < len(cells) <= MAX_PROBED_CHUNKS:
            return cells if len(cells) <= MAX_PROBED_CHUNKS else [box]
        failed = []
        for cell in cells:
            try:
                self._read_stored(cell.intersect(box))
            except Exception:
                failed.append(cell)
        return failed or [box]


def assemble_pyramid(
    name: str,
    levels: Sequence[StoredArrayVolume],
    voxel_size: Sequence[float] | None,
    location: str,
) -> list[StoredArrayVolume]:
    """Keep the native levels that are integer downsamplings of level 0, finest first.

    Levels are sorted by voxel volume; a level whose voxel size is not an integer
    multiple of level 0's is skipped with a warning. With ``voxel_size`` (an override for
    level 0), every level keeps its integer factor relative to it.
    """
    ordered = sorted(levels, key=lambda v: float(np.prod(v.voxel_size)))
    base = ordered[0]
    target = tuple(float(v) for v in voxel_size) if voxel_size is not None else base.voxel_size
    kept: list[StoredArrayVolume] = []
    for level in ordered:
        ratios = [v / b for v, b in zip(level.voxel_size, base.voxel_size, strict=True)]
        factors = [round(r) for r in ratios]
        if any(f < 1 or abs(f - r) > 1e-3 * r for f, r in zip(factors, ratios, strict=True)):
            logger.warning(
                "%s (%s): skipping pyramid level %s: voxel size %s is not an integer multiple "
                "of %s", location, name, level.key, level.voxel_size, base.voxel_size,
            )
            continue
        if level.num_channels != base.num_channels or level.dtype != base.dtype:
            raise SourceError(f"{location}: pyramid level {level.key} differs in channels or dtype")
        kept.append(level.with_voxel_size([t * f for t, f in zip(target, factors, strict=True)]))
    return kept
