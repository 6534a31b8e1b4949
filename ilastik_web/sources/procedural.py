"""A terabyte-sized synthetic volume computed per block from voxel coordinates.

Location syntax: ``procedural:`` or ``procedural:key=value,...`` with keys

- ``shape=ZxYxX``  level-0 size (default 16384x65536x65536, about 70 TB of uint8);
- ``seed=N``       pattern seed (default 0);
- ``cell=N``       cell spacing in level-0 voxels (default 48);
- ``chunk=N``      block edge reported as chunk shape (default 64);
- ``voxel=Z,Y,X`` is not a key: use the ``voxel_size`` override (default 100 nm).

The pattern is fluorescence-like: Voronoi cells on a jittered lattice (hashed feature
points) with bright membranes, bright nuclei and per-cell brightness, hashed-lattice
value noise for texture and illumination, and hashed per-voxel noise. Level ``L`` is
evaluated directly at its own voxel centres (factor 2**L per axis) with every component
band-limited to that level (membrane and nucleus edges widened by the voxel footprint,
noise octaves finer than two voxels left out, cells replaced by their mean once they
are smaller than a few voxels), so coarse levels are cheap and look like a downsample of
the finer ones without reading them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ilastik_web.abc import Box, FixedVolume, MultiscaleVolume, VolumeMetadata
from ilastik_web.errors import SourceError

SCHEME = "procedural:"
DEFAULT_SHAPE = (16384, 65536, 65536)
DEFAULT_VOXEL_SIZE = (100.0, 100.0, 100.0)
MIN_SIZE = 64

_MEMBRANE_SIGMA = 1.2  # level-0 voxels
_TEXTURE_WAVELENGTHS = (4.0, 8.0, 16.0, 32.0)
_ILLUMINATION_WAVELENGTHS = (512.0, 2048.0, 8192.0)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PER_AXIS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F),
             np.uint64(0x165667B19E3779F9))


@dataclass(frozen=True)
class ProceduralParams:
    """Parameters of the procedural volume (see the module docstring)."""

    shape: tuple[int, int, int] = DEFAULT_SHAPE
    seed: int = 0
    cell: int = 48
    chunk: int = 64

    @classmethod
    def parse(cls, location: str) -> ProceduralParams:
        if not location.startswith(SCHEME):
            raise SourceError(f"{location}: not a procedural location")
        body = location[len(SCHEME):].strip()
        values: dict[str, object] = {}
        try:
            for item in filter(None, (part.strip() for part in body.split(","))):
                name, _, value = item.partition("=")
                name = name.strip()
                if name == "shape":
                    dims = tuple(int(v) for v in value.lower().split("x"))
                    if len(dims) != 3:
                        raise ValueError("shape needs three sizes ZxYxX")
                    values["shape"] = dims
                elif name in ("seed", "cell", "chunk"):
                    values[name] = int(value)
                else:
                    raise ValueError(f"unknown key {name!r}")
        except ValueError as exc:
            raise SourceError(f"{location}: bad procedural parameters: {exc}") from None
        params = cls(**values)  # type: ignore[arg-type]
        if min(params.shape) < 1 or params.cell < 4 or params.chunk < 1 or params.seed < 0:
            raise SourceError(f"{location}: bad procedural parameters: sizes must be positive, "
                              "cell >= 4, seed >= 0")
        return params

    def __str__(self) -> str:
        z, y, x = self.shape
        return f"{SCHEME}shape={z}x{y}x{x},seed={self.seed},cell={self.cell},chunk={self.chunk}"


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def hash_uniform(seed: int, salt: int, *coords: np.ndarray) -> np.ndarray:
    """Deterministic uniform [0, 1) values from integer coordinate arrays (broadcast)."""
    with np.errstate(over="ignore"):
        h = np.full((), (seed * 1_000_003 + salt) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        for axis, c in enumerate(coords):
            h = _mix(h ^ (np.asarray(c).astype(np.int64).astype(np.uint64) * _PER_AXIS[axis % 3]))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def value_noise(
    seed: int, salt: int, centres: Sequence[np.ndarray], wavelength: float
) -> np.ndarray:
    """Smooth lattice noise in [0, 1) at the grid ``centres`` (z, y, x 1D arrays)."""
    positions = [c / wavelength for c in centres]
    lows = [np.floor(p).astype(np.int64) for p in positions]
    weights = []
    for p, lo in zip(positions, lows, strict=True):
        t = p - lo
        weights.append(t * t * (3.0 - 2.0 * t))
    origins = [int(lo.min()) for lo in lows]
    lattice_axes = [
        np.arange(o, int(lo.max()) + 2, dtype=np.int64) for o, lo in zip(origins, lows, strict=True)
    ]
    grid = hash_uniform(
        seed,
        salt,
        lattice_axes[0][:, None, None],
        lattice_axes[1][None, :, None],
        lattice_axes[2][None, None, :],
    )
    for axis in (2, 1, 0):
        index = lows[axis] - origins[axis]
        shape = [1, 1, 1]
        shape[axis] = -1
        w = weights[axis].reshape(shape)
        grid = np.take(grid, index, axis=axis) * (1.0 - w) + np.take(grid, index + 1, axis=axis) * w
    return grid


class ProceduralVolume(FixedVolume):
    """One level of the procedural pyramid (level ``L`` is downsampled by ``2**L``)."""

    def __init__(
        self,
        params: ProceduralParams,
        level: int = 0,
        voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
    ):
        self.params = params
        self.level = int(level)
        self.factor = 2**self.level
        shape = tuple(-(-s // self.factor) for s in params.shape)
        super().__init__(VolumeMetadata(
            shape=shape,
            num_channels=1,
            dtype=np.uint8,
            voxel_size=tuple(float(v) * self.factor for v in voxel_size),
            chunk_shape=tuple(min(params.chunk, s) for s in shape),
            key=f"{params}/level{self.level}",
        ))

    def _read(self, box: Box) -> np.ndarray:
        return self.compute(box)[None]

    def _centres(self, box: Box) -> list[np.ndarray]:
        """Level-0 coordinates of this level's voxel centres in ``box``."""
        f = self.factor
        return [
            np.arange(a, b, dtype=np.float64) * f + (f - 1) / 2
            for a, b in zip(box.start, box.stop, strict=True)
        ]

    def compute(self, box: Box) -> np.ndarray:
        """The (z, y, x) uint8 values of ``box`` on this level."""
        centres = self._centres(box)
        f = self.factor
        cell = float(self.params.cell)
        seed = self.params.seed
        weight = min(1.0, max(0.0, (cell / f - 2.0) / 2.0))
        if weight >= 1:
            pattern = _cell_pattern(seed, self.params.cell, centres, f)
        elif weight > 0:
            pattern = weight * _cell_pattern(seed, self.params.cell, centres, f)
            pattern += (1.0 - weight) * _pattern_mean(seed, self.params.cell)
        else:
            pattern = np.full(box.shape, _pattern_mean(seed, self.params.cell))
        texture = np.zeros(box.shape)
        for octave, wavelength in enumerate(_TEXTURE_WAVELENGTHS):
            fade = min(1.0, max(0.0, wavelength / (2.0 * f) - 1.0))
            if fade > 0:
                texture += fade * 0.5**octave * (
                    value_noise(seed, 100 + octave, centres, wavelength) - 0.5
                )
        illumination = np.full(box.shape, 0.55)
        for octave, wavelength in enumerate(_ILLUMINATION_WAVELENGTHS):
            illumination += 0.2 * value_noise(seed, 200 + octave, centres, wavelength)
        value = illumination * (pattern * (1.0 + 0.35 * texture) + 0.04)
        grid = np.meshgrid(
            *(np.arange(a, b) for a, b in zip(box.start, box.stop, strict=True)), indexing="ij"
        )
        white = hash_uniform(seed, 300 + self.level, *grid) - 0.5
        value += white * (0.08 / f**1.5)
        return np.clip(np.rint(value * 255.0), 0, 255).astype(np.uint8)


def jittered_voronoi(
    seed: int, spacing: float, centres: Sequence[np.ndarray], *, jitter: float
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Distances to the nearest and second-nearest cell centre, and the nearest cell's index.

    Cells are a lattice of ``spacing`` with one hashed feature point each, placed uniformly
    in the middle ``jitter`` fraction of its lattice cell. ``centres`` are the (z, y, x)
    coordinates of the output grid (same units as ``spacing``). Distances are computed
    relative to the grid's first point, so float32 stays exact far from the origin.

    Returns
    -------
    nearest, second : ndarray
        float32 distances, shaped ``(len(z), len(y), len(x))``.
    cell_index : tuple of ndarray
        Lattice coordinates (z, y, x) of each voxel's nearest cell.
    """
    origin = [float(np.floor(c[0])) for c in centres]
    local = [(c - o).astype(np.float32) for c, o in zip(centres, origin, strict=True)]
    cells = [np.floor(c / spacing).astype(np.int64) for c in centres]
    lo = [int(c.min()) - 1 for c in cells]
    axes = [np.arange(a, int(c.max()) + 2, dtype=np.int64) for a, c in zip(lo, cells, strict=True)]
    mesh = (axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :])
    offset = (1.0 - jitter) / 2
    points = [
        ((mesh[a] + offset + jitter * hash_uniform(seed, 10 + a, *mesh)) * spacing
         - origin[a]).astype(np.float32)
        for a in range(3)
    ]
    shape = tuple(len(c) for c in centres)
    best = np.full(shape, np.inf, np.float32)
    second = np.full(shape, np.inf, np.float32)
    best_id = np.zeros(shape, np.int64)
    rel = [c - a for c, a in zip(cells, lo, strict=True)]
    lattice_shape = points[0].shape
    for oz in (-1, 0, 1):
        iz = (rel[0] + oz)[:, None, None]
        for oy in (-1, 0, 1):
            iy = (rel[1] + oy)[None, :, None]
            for ox in (-1, 0, 1):
                ix = (rel[2] + ox)[None, None, :]
                flat = (iz * lattice_shape[1] + iy) * lattice_shape[2] + ix
                d = (np.take(points[0], flat) - local[0][:, None, None]) ** 2
                d += (np.take(points[1], flat) - local[1][None, :, None]) ** 2
                d += (np.take(points[2], flat) - local[2][None, None, :]) ** 2
                closer = d < best
                np.minimum(second, np.where(closer, best, d), out=second)
                np.copyto(best_id, flat, where=closer)
                np.copyto(best, d, where=closer)
    gz, gy, gx = np.unravel_index(best_id, lattice_shape)
    return np.sqrt(best), np.sqrt(second), (axes[0][gz], axes[1][gy], axes[2][gx])


def _cell_pattern(seed: int, cell: int, centres: Sequence[np.ndarray], f: int) -> np.ndarray:
    """Membranes, nuclei and cytoplasm of jittered-lattice Voronoi cells at ``centres``."""
    nearest, runner_up, ids = jittered_voronoi(seed, cell, centres, jitter=0.7)
    footprint = f * f / 12.0
    sigma = math.sqrt(_MEMBRANE_SIGMA**2 + footprint)
    membrane = (_MEMBRANE_SIGMA / sigma) * np.exp(-0.5 * ((runner_up - nearest) / (2 * sigma)) ** 2)
    nucleus_radius = cell * (0.2 + 0.1 * hash_uniform(seed, 20, *ids))
    edge = max(1.0, 0.5 * f)
    nucleus = 1.0 / (1.0 + np.exp((nearest - nucleus_radius) / edge))
    brightness = 0.5 + hash_uniform(seed, 21, *ids)
    return 0.18 * brightness * (1.0 - nucleus) + 0.5 * nucleus + 0.75 * membrane


@functools.cache
def _pattern_mean(seed: int, cell: int) -> float:
    """Mean of the cell pattern, used where cells are too small to draw."""
    side = 2 * cell
    centres = [np.arange(side, dtype=np.float64)] * 3
    return float(_cell_pattern(seed, cell, centres, 1).mean())


def open_procedural(
    location: str, *, voxel_size: Sequence[float] | None = None, min_size: int = MIN_SIZE
) -> MultiscaleVolume:
    """The procedural pyramid: levels until every axis is at most ``min_size``."""
    params = ProceduralParams.parse(location)
    voxel = tuple(voxel_size) if voxel_size is not None else DEFAULT_VOXEL_SIZE
    levels = [ProceduralVolume(params, 0, voxel)]
    while max(levels[-1].shape) > min_size:
        levels.append(ProceduralVolume(params, len(levels), voxel))
    return MultiscaleVolume("procedural", levels)
