"""The built-in demo: a synthetic fluorescence volume with ground-truth class labels.

Generated deterministically (seeded) on first use into a cache folder as two OME-Zarr
0.4 images with pyramids (mean for the raw data, mode for the labels), written to a
temporary folder and renamed into place, so a half-written demo is never seen.

The image is a tissue of Voronoi cells on a jittered lattice (about 4.4 µm apart) in
anisotropic voxels (z 200 nm, y/x 100 nm): bright membranes, bright textured nuclei,
dimmer cytoplasm with per-cell brightness, some empty (extracellular) cells, smooth
uneven illumination falling off with depth, an anisotropic Gaussian PSF, Poisson shot
noise, a camera offset and read noise. Membranes and nuclei overlap in intensity once
illumination varies, so the classes are learnable from texture and context but not by
a threshold.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorstore as ts
from scipy import ndimage

from ilastik_web.pyramid import downsample_mean, downsample_mode, pyramid_factors
from ilastik_web.sources.procedural import hash_uniform, jittered_voronoi, value_noise

logger = logging.getLogger(__name__)

DEMO_VERSION = 1
DEFAULT_SHAPE = (128, 512, 512)
VOXEL_SIZE = (200.0, 100.0, 100.0)  # nm (z, y, x)
CLASS_NAMES = {1: "background", 2: "membrane", 3: "cytoplasm", 4: "nucleus"}
BACKGROUND, MEMBRANE, CYTOPLASM, NUCLEUS = 1, 2, 3, 4

_CELL_SPACING = 44.0  # in y/x voxels; z voxels are twice as long
_MEMBRANE_HALF_WIDTH = 1.5  # y/x voxels on each side of the cell boundary
_EMPTY_CELL_FRACTION = 0.12
_PHOTONS_AT_FULL_SCALE = 400.0
_CAMERA_OFFSET = 100.0
_READ_NOISE = 3.0
_PSF_SIGMA = (1.2, 1.0, 1.0)  # voxels (z, y, x): 240 nm axially, 100 nm laterally
_SLAB = 16
_GEOMETRY_STEP = 4  # y/x voxels between samples of the cell geometry
_CHUNK = (64, 64, 64)


@dataclass(frozen=True)
class DemoData:
    """Where the demo lives and what it holds.

    Attributes
    ----------
    raw_path
        OME-Zarr (0.4) image, uint16, one channel, with a pyramid.
    labels_path
        OME-Zarr (0.4) ground truth, uint8, same shape; values are the keys of
        ``class_names`` (0 never occurs).
    voxel_size
        Nanometres (z, y, x).
    class_names
        ``{1: "background", 2: "membrane", 3: "cytoplasm", 4: "nucleus"}``.
    shape
        Level-0 shape (z, y, x).
    """

    raw_path: Path
    labels_path: Path
    voxel_size: tuple[float, float, float]
    shape: tuple[int, int, int]
    class_names: dict[int, str] = field(default_factory=lambda: dict(CLASS_NAMES))


def default_cache_dir() -> Path:
    """``$ILASTIK_WEB_CACHE`` or ``~/.cache/ilastik-web``."""
    configured = os.environ.get("ILASTIK_WEB_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "ilastik-web"


def ensure_demo(
    cache_dir: Path | None = None,
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
) -> DemoData:
    """Return the demo volume, generating it into ``cache_dir`` if it is not there yet.

    Parameters
    ----------
    cache_dir
        Parent folder; :func:`default_cache_dir` when None.
    shape
        Level-0 shape (z, y, x); tests use a smaller one.
    seed
        Generation seed; the same seed and shape give the same bytes.
    """
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = parent / f"demo-v{DEMO_VERSION}-{shape[0]}x{shape[1]}x{shape[2]}-seed{seed}"
    data = DemoData(folder / "raw.ome.zarr", folder / "labels.ome.zarr", VOXEL_SIZE, shape)
    if folder.is_dir():
        return data
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=parent))
    try:
        logger.info("generating the demo volume %s into %s", shape, folder)
        raw, labels = generate_demo(shape, seed=seed)
        _write_ome_zarr(staging / "raw.ome.zarr", raw, "raw", "mean")
        _write_ome_zarr(staging / "labels.ome.zarr", labels, "labels", "mode")
        try:
            staging.rename(folder)
        except OSError:
            if not folder.is_dir():  # not a concurrent generator that won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return data


def _upsample_axis(coarse: np.ndarray, axis: int, fine: np.ndarray, step: int, linear: bool):
    """Values at fine indices ``fine`` along ``axis`` from samples every ``step`` voxels."""
    position = fine / step
    if not linear:
        return np.take(coarse, np.rint(position).astype(np.int64), axis=axis)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, coarse.shape[axis] - 1)
    shape = [1] * coarse.ndim
    shape[axis] = -1
    weight = (position - low).astype(np.float32).reshape(shape)
    below, above = np.take(coarse, low, axis=axis), np.take(coarse, high, axis=axis)
    return below * (1 - weight) + above * weight


def _upsample(coarse: np.ndarray, z0: int, z1: int, shape, steps, linear: bool) -> np.ndarray:
    out = _upsample_axis(coarse, 0, np.arange(z0, z1), steps[0], linear)
    out = _upsample_axis(out, 1, np.arange(shape[1]), steps[1], linear)
    return _upsample_axis(out, 2, np.arange(shape[2]), steps[2], linear)


def generate_demo(shape: tuple[int, int, int], *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The demo's raw uint16 volume and uint8 class labels, both (z, y, x).

    The cell geometry is evaluated on a grid of 4 y/x-voxel spacing and interpolated
    (distances linearly, per-cell properties by nearest sample), which keeps generation
    to seconds; distances vary smoothly, so membranes stay sharp.
    """
    anisotropy = VOXEL_SIZE[0] / VOXEL_SIZE[2]
    steps = (max(1, round(_GEOMETRY_STEP / anisotropy)), _GEOMETRY_STEP, _GEOMETRY_STEP)
    coarse_centres = [
        np.arange(-(-(s - 1) // st) + 1, dtype=np.float64) * st * (anisotropy if a == 0 else 1.0)
        for a, (s, st) in enumerate(zip(shape, steps, strict=True))
    ]
    nearest, second, cell_id = jittered_voronoi(seed, _CELL_SPACING, coarse_centres, jitter=0.8)
    membrane_distance = 0.5 * (second - nearest)
    properties = np.stack(
        [hash_uniform(seed, 30 + k, *cell_id).astype(np.float32) for k in range(5)]
    )
    intensity = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    for z0 in range(0, shape[0], _SLAB):
        z1 = min(z0 + _SLAB, shape[0])
        centres = [
            np.arange(z0, z1, dtype=np.float64) * anisotropy,
            np.arange(shape[1], dtype=np.float64),
            np.arange(shape[2], dtype=np.float64),
        ]
        distance = _upsample(membrane_distance, z0, z1, shape, steps, linear=True)
        centre_distance = _upsample(nearest, z0, z1, shape, steps, linear=True)
        empty_u, bright_u, radius_u, nucleus_u, membrane_u = (
            _upsample(p, z0, z1, shape, steps, linear=False) for p in properties
        )
        empty = empty_u < _EMPTY_CELL_FRACTION
        is_membrane = distance < _MEMBRANE_HALF_WIDTH  # every cell boundary has a membrane
        is_nucleus = (centre_distance < _CELL_SPACING * (0.2 + 0.1 * radius_u)) & ~empty
        is_nucleus &= ~is_membrane
        slab = np.full(distance.shape, CYTOPLASM, np.uint8)
        slab[empty] = BACKGROUND
        slab[is_nucleus] = NUCLEUS
        slab[is_membrane] = MEMBRANE
        labels[z0:z1] = slab

        chromatin = value_noise(seed, 40, centres, 5.0) + 0.5 * value_noise(seed, 41, centres, 2.5)
        speckle = value_noise(seed, 42, centres, 8.0)
        cytoplasm = 0.2 * (0.6 + 0.8 * bright_u) * (0.85 + 0.3 * speckle)
        nucleus = 0.65 * (0.5 + 0.5 * chromatin) * (0.8 + 0.4 * nucleus_u)
        value = np.where(empty, 0.03, np.where(is_nucleus, nucleus, cytoplasm))
        value += 0.9 * np.exp(-0.5 * (distance / 0.9) ** 2) * (0.7 + 0.6 * membrane_u)
        intensity[z0:z1] = value
    ndimage.gaussian_filter(intensity, _PSF_SIGMA, output=intensity, mode="nearest")

    zz, yy, xx = (np.linspace(0.0, 1.0, s, dtype=np.float32) for s in shape)
    depth = 1.0 - 0.45 * zz[:, None, None]  # light scattered away deeper in the sample
    spot = np.exp(-((yy[None, :, None] - 0.35) ** 2 + (xx[None, None, :] - 0.6) ** 2) / 0.35)
    illumination = depth * (0.45 + 0.55 * spot)
    rng = np.random.default_rng(seed)
    raw = np.empty(shape, np.uint16)
    for z0 in range(0, shape[0], _SLAB):
        z1 = min(z0 + _SLAB, shape[0])
        expected = _PHOTONS_AT_FULL_SCALE * intensity[z0:z1] * illumination[z0:z1]
        photons = rng.poisson(expected).astype(np.float32)
        photons += _CAMERA_OFFSET + _READ_NOISE * rng.standard_normal(photons.shape, np.float32)
        raw[z0:z1] = np.clip(np.rint(photons), 0, 65535).astype(np.uint16)
    return raw, labels


def _write_ome_zarr(path: Path, volume: np.ndarray, name: str, method: str) -> None:
    """Write a (z, y, x) volume and its pyramid as OME-Zarr 0.4 (zarr v2, blosc lz4)."""
    path.mkdir()
    reduce = downsample_mean if method == "mean" else downsample_mode
    level = volume[None]
    factors = (1, 1, 1)
    steps = [(1, 1, 1), *pyramid_factors(volume.shape, VOXEL_SIZE)]
    datasets = []
    for index, step in enumerate(steps):
        if index:
            level = reduce(level, step)
            factors = tuple(f * s for f, s in zip(factors, step, strict=True))
        array = level[0]
        chunks = [min(c, s) for c, s in zip(_CHUNK, array.shape, strict=True)]
        store = ts.open(
            {
                "driver": "zarr",
                "kvstore": {"driver": "file", "path": str(path / str(index))},
                "metadata": {
                    "shape": list(array.shape),
                    "chunks": chunks,
                    "dtype": array.dtype.str,
                    "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2},
                },
            },
            create=True,
        ).result()
        store.write(array).result()
        scale = [v * f for v, f in zip(VOXEL_SIZE, factors, strict=True)]
        datasets.append(
            {"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    multiscale = {"version": "0.4", "name": name, "axes": axes, "datasets": datasets,
                  "type": method}
    (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (path / ".zattrs").write_text(json.dumps({"multiscales": [multiscale]}, indent=1))
