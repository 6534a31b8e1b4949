"""Features of a source's pyramid levels, computed per box with the right halo and cached.

Level 0 is filtered exactly as ilastik does. A coarser level with downsampling factors
``f`` (z, y, x) is filtered with σ/f per axis, so its features approximate the level-0
features at that position and one classifier serves every zoom level cheaply.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import filters
from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.cancel import check_cancelled
from ilastik_web.labels import LabelSnapshot

log = logging.getLogger(__name__)


class FeatureComputer:
    """Compute and cache features of one multiscale source for one feature selection.

    Parameters
    ----------
    source
        The raw data pyramid.
    selection
        Feature selection as accepted by :func:`filters.normalize_selection`.
    cache
        Where feature blocks are kept; keys include the source, level, box, selection and
        input channels, so features survive classifier generations.
    channels
        The source's channels that feed the features (ilastik's channel choice), in
        ascending order; None: all of them. See :func:`check_channels`.
    """

    def __init__(self, source: MultiscaleVolume, selection, cache: ArrayCache,
                 channels=None):
        self.source = source
        self.selection = filters.normalize_selection(selection)
        if not self.selection:
            raise ValueError("the feature selection is empty")
        self.cache = cache
        self.channels = check_channels(channels, source.base.num_channels)
        self.ndim = 2 if source.base.shape[0] == 1 else 3
        names = filters.channel_names(
            self.selection, ndim=self.ndim, input_channels=len(self.channels)
        )
        if self.channels != tuple(range(source.base.num_channels)):
            # A classifier trained on other channels must never pass for this one's.
            chosen = ", ".join(str(c) for c in self.channels)
            suffix = f" on channel{'s' if len(self.channels) > 1 else ''} {chosen}"
            names = [name + suffix for name in names]
        self.channel_names = names
        self._groups: dict[int, list[_Group]] = {}

    @property
    def num_features(self) -> int:
        return len(self.channel_names)

    def halo(self, level: int) -> tuple[int, int, int]:
        """Halo (z, y, x) in voxels of ``level``."""
        halo = [0, 0, 0]
        for group in self._level_groups(level):
            h = filters.required_halo(group.selection, ndim=self.ndim, voxel_size=group.voxel_size)
            h3 = (0, *h) if self.ndim == 2 else tuple(h)
            halo = [max(a, int(b)) for a, b in zip(halo, h3, strict=True)]
        return (halo[0], halo[1], halo[2])

    def features(self, level: int, box: Box) -> np.ndarray:
        """float32 features (channels, *box.shape) of ``box`` at pyramid ``level``."""
        key = ("features", self.source.levels[level].key, box, self.selection, self.channels)
        return self.cache.get_or_compute(key, lambda: self._compute(level, box))

    def _compute(self, level: int, box: Box) -> np.ndarray:
        check_cancelled()
        volume = self.source.levels[level]
        read_box = box.grow(self.halo(level)).clip(volume.shape)
        image = volume.read(read_box)
        if len(self.channels) != image.shape[0]:
            image = image[list(self.channels)]
        image = image.astype(np.float32, copy=False)
        if self.ndim == 2:
            image = image[:, 0]
        inner = box.relative_to(read_box)
        inner = inner[1:] if self.ndim == 2 else inner
        out = np.empty((self.num_features, *box.shape), dtype=np.float32)
        view = out[:, 0] if self.ndim == 2 else out
        for group in self._level_groups(level):
            check_cancelled()
            # Only the box is filtered; the halo around it is context (a one-plane tile
            # then costs one plane, not 1 + 2 * halo).
            result = filters.compute_features(image, group.selection, ndim=self.ndim,
                                              voxel_size=group.voxel_size,
                                              region=[(s.start, s.stop) for s in inner])
            if group.derivative_scale is not None:
                result = result * group.derivative_scale.reshape((-1,) + (1,) * (result.ndim - 1))
            view[group.channels] = result
        return out

    def _level_groups(self, level: int) -> list[_Group]:
        cached = self._groups.get(level)
        if cached is None:
            cached = self._groups[level] = _plan_level(
                self.selection, self.source.factors(level), self.ndim, len(self.channels),
            )
        return cached


def check_channels(channels, num_channels: int) -> tuple[int, ...]:
    """The chosen input channels as a sorted tuple; None means all ``num_channels``.

    Raises
    ------
    ValueError
        Empty, not integers, repeated or out of range.
    """
    if channels is None:
        return tuple(range(num_channels))
    chosen = list(channels)
    if any(isinstance(c, bool) or not isinstance(c, int | np.integer) for c in chosen):
        raise ValueError(f"channels must be a list of channel indices, got {channels!r}")
    chosen = [int(c) for c in chosen]
    if not chosen:
        raise ValueError("choose at least one channel to feed the features")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"channel repeated in {chosen}")
    bad = [c for c in chosen if not 0 <= c < num_channels]
    if bad:
        raise ValueError(f"no channel {bad[0]}: the source has {num_channels} "
                         f"(0..{num_channels - 1})")
    return tuple(sorted(chosen))


@dataclass(frozen=True)
class _Group:
    """Features computed together at one pyramid level: one original (σ, in_2d)."""

    selection: tuple[filters.FeatureSpec, ...]
    voxel_size: tuple[float, ...] | None
    channels: np.ndarray  # where this group's channels go in the full feature stack
    derivative_scale: np.ndarray | None  # per channel, to level-0 units


# Derivative order of each feature's values (structure tensor: products of 1st derivatives).
_DERIVATIVE_ORDER = {
    "GaussianSmoothing": 0,
    "LaplacianOfGaussian": 2,
    "GaussianGradientMagnitude": 1,
    "DifferenceOfGaussians": 0,
    "StructureTensorEigenvalues": 2,
    "HessianOfGaussianEigenvalues": 2,
}
# The smallest per-axis σ (in voxels of a coarse level) we ask the filters for.
_MIN_AXIS_SIGMA = 0.1


def _plan_level(selection, factors, ndim: int, input_channels: int) -> list[_Group]:
    """How to compute ``selection`` on a level downsampled by ``factors`` (z, y, x).

    The filters take σ in units of the finest active axis and a relative voxel size, and
    return derivatives per finest voxel. For σ/f per axis we hand them σ/f_min with the
    factors as voxel size, then rescale derivatives by f_min^-order to level-0 units.
    """
    spatial = tuple(float(f) for f in (factors if ndim == 3 else factors[1:]))
    offsets = np.cumsum([0] + [s.eigenvalue_count(ndim) * input_channels for s in selection])
    if all(f == 1.0 for f in spatial):
        return [_Group(selection, None, np.arange(offsets[-1]), None)]
    by_scale: dict[tuple[float, bool], list[int]] = {}
    for i, spec in enumerate(selection):
        by_scale.setdefault((spec.sigma, spec.in_2d), []).append(i)
    groups = []
    for (sigma, in_2d), members in by_scale.items():
        active = spatial[1:] if (ndim == 3 and in_2d) else spatial
        f_min, f_max = min(active), max(active)
        level_sigma = max(sigma / f_min, _MIN_AXIS_SIGMA * f_max / f_min)
        specs = tuple(
            filters.FeatureSpec(selection[i].feature_id, level_sigma, in_2d) for i in members
        )
        channels = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in members])
        orders = [_DERIVATIVE_ORDER[selection[i].feature_id] for i in members]
        scale = np.concatenate([
            np.full(offsets[i + 1] - offsets[i], f_min**-order)
            for i, order in zip(members, orders, strict=True)
        ]).astype(np.float32)
        groups.append(_Group(specs, spatial, channels, scale))
    return groups


#: Labels spread over more planes than this in every orientation use 3D boxes.
MAX_FLAT_PLANES = 4


def training_tiles(snapshot: LabelSnapshot, *, tile_edge: int = 256) -> list[Box]:
    """Boxes whose features cover every labelled voxel, on the viewer's chunk grids.

    Labels painted in a plane get one-voxel-thick tiles of that plane, aligned to the
    grid of ``tile_edge`` squares the viewer fetches predictions on, so their features
    are the very ones the visible prediction chunks use (and new strokes never
    invalidate the features of earlier tiles). Labels spread in 3D get their block's
    tight bounding box.
    """
    tiles: set[Box] = set()
    shape = snapshot.shape
    for block_box, block in snapshot.labelled_blocks():
        nz = np.nonzero(block)
        unique = [np.unique(a) for a in nz]
        axis = int(np.argmin([len(u) for u in unique]))
        if len(unique[axis]) > MAX_FLAT_PLANES:
            lo = [int(a.min()) for a in nz]
            hi = [int(a.max()) + 1 for a in nz]
            tiles.add(Box(lo, hi).translate(block_box.start))
            continue
        in_plane = [a for a in range(3) if a != axis]
        first_axis, second_axis = in_plane
        for coordinate in unique[axis]:
            on_plane = nz[axis] == coordinate
            rows = (nz[first_axis][on_plane] + block_box.start[first_axis]) // tile_edge
            cols = (nz[second_axis][on_plane] + block_box.start[second_axis]) // tile_edge
            for cell in set(zip(rows.tolist(), cols.tolist(), strict=True)):
                start = [0, 0, 0]
                stop = [0, 0, 0]
                start[axis] = block_box.start[axis] + int(coordinate)
                stop[axis] = start[axis] + 1
                for a, index in zip(in_plane, cell, strict=True):
                    start[a] = index * tile_edge
                    stop[a] = min(shape[a], (index + 1) * tile_edge)
                tiles.add(Box(start, stop))
    return sorted(tiles, key=lambda b: (b.start, b.stop))


class TrainingSamples:
    """The labelled voxels' features of earlier trainings, per training tile.

    A retraining recomputes (or fetches from the feature cache) only the tiles whose
    labels changed: after a stroke that is the stroke's own plane, so retraining stays
    fast when the feature cache has dropped the other tiles, and the bytes kept are just
    those of the samples (labelled voxels × channels).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tiles: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def get(self, key: tuple, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            kept = self._tiles.get(key)
        if kept is None or not np.array_equal(kept[0], labels):
            return None
        return kept[1], kept[2]

    def keep(self, tiles: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Replace the store with ``tiles`` (those of the latest training)."""
        with self._lock:
            self._tiles = tiles

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(x.nbytes + y.nbytes + t.nbytes for t, x, y in self._tiles.values())


def gather_training_samples(
    computer: FeatureComputer, snapshot: LabelSnapshot, *, tile_edge: int = 256,
    should_stop: Callable[[], bool] | None = None,
    samples: TrainingSamples | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (samples, channels) and labels (samples,) of every labelled voxel.

    Features come from :meth:`FeatureComputer.features` on :func:`training_tiles`, so
    they are cached and shared with the prediction of the same chunks. With ``samples``,
    tiles whose labels did not change since the last call reuse their samples, and
    tiles that did are computed first (the newest stroke's plane).
    """
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    kept: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    todo: list[tuple[Box, tuple, np.ndarray]] = []
    order: list[tuple] = []
    for tile in training_tiles(snapshot, tile_edge=tile_edge):
        labels = snapshot.read(tile)
        mask = labels > 0
        if not mask.any():
            continue
        key = (computer.source.levels[0].key, computer.selection, computer.channels, tile)
        order.append(key)
        found = samples.get(key, labels) if samples is not None else None
        if found is None:
            todo.append((tile, key, labels))
            continue
        kept[key] = (labels, *found)
    for tile, key, labels in todo:
        if should_stop is not None and should_stop():
            break
        mask = labels > 0
        feats = computer.features(0, tile)
        kept[key] = (labels, np.ascontiguousarray(feats[:, mask].T), labels[mask])
    for key in order:  # tile order, whichever were reused: the same labels train alike
        if key in kept:
            xs.append(kept[key][1])
            ys.append(kept[key][2])
    if samples is not None and not (should_stop is not None and should_stop()):
        samples.keep(kept)
    if not xs:
        return np.zeros((0, computer.num_features), np.float32), np.zeros(0, np.uint8)
    return np.concatenate(xs), np.concatenate(ys)
