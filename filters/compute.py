"""The feature bank: ilastik's presmoothed features, tiled, on any backend.

The output is split into tiles (default 128³ voxels in 3D, 1024² in 2D). For each tile and
input channel the input is read with the largest halo of the selection, clipped at the image
edge and completed there by mirroring (vigra's border: the edge voxel is not repeated). Each
scale group (σ, in_2d) then presmooths its part of that read and runs its filters in "valid"
mode, so every separable pass shrinks the array instead of padding it: smoothed and derivative
intermediates are shared by all features of the group and discarded with it.

Memory bound: scratch comes from per-thread arenas that are kept between calls (fresh pages
cost a fault each, which dominated whole-volume runs here) and grow to the largest scale
group of one tile: about 450 MiB per worker thread for the full 61-channel set on the
default 128³ tiles (the σ=10 group holds ~25 arrays of (128+6)³ float32 plus its mirrored
read of (128+76)³), independent of the image size. ``tile_shape`` trades speed for less;
:func:`filters.release_memory` returns the retained arenas. The output array is the
caller's (pass ``out=`` to reuse one).

Parallelism: on the CPU the scale groups of a tile run as concurrent tasks on
``numba.get_num_threads()`` threads of the calling thread, with single-threaded kernels;
on CUDA torch runs them in turn.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from filters.backends import Backend, get_backend, scratch, serial_kernels, workspace
from filters.kernels import AxisPlan, ScalePlan, plan_scale
from filters.spec import (
    FeatureSpec,
    Selection,
    check_voxel_size,
    normalize_selection,
    num_channels,
)

logger = logging.getLogger(__name__)

DEFAULT_TILE_3D = (128, 128, 128)
DEFAULT_TILE_2D = (1, 1024, 1024)


@dataclass(frozen=True)
class _Group:
    """Features sharing one presmoothing: same σ, same in_2d."""

    plan: ScalePlan
    feature_ids: frozenset[str]
    outputs: tuple[tuple[FeatureSpec, int, int], ...]  # (spec, first channel, channels/input)

    @property
    def halo(self) -> tuple[int, ...]:
        return self.plan.halo(self.feature_ids)


def _groups(
    specs: Sequence[FeatureSpec], ndim: int, voxel_size: tuple[float, ...] | None, inputs: int
) -> list[_Group]:
    by_scale: dict[tuple[float, bool], list[tuple[FeatureSpec, int, int]]] = {}
    channel = 0
    for spec in specs:
        count = spec.eigenvalue_count(ndim)
        in_2d = spec.in_2d and ndim == 3
        by_scale.setdefault((spec.sigma, in_2d), []).append((spec, channel, count))
        channel += count * inputs
    return [
        _Group(
            plan=plan_scale(sigma, in_2d, ndim, voxel_size),
            feature_ids=frozenset(spec.feature_id for spec, _, _ in outputs),
            outputs=tuple(outputs),
        )
        for (sigma, in_2d), outputs in by_scale.items()
    ]


def _internal_halo(groups: Sequence[_Group]) -> tuple[int, int, int]:
    halo = [0, 0, 0]
    for group in groups:
        halo = [max(a, b) for a, b in zip(halo, group.halo, strict=True)]
    return tuple(halo)  # type: ignore[return-value]


def required_halo(
    selection: Selection, *, ndim: int, voxel_size: Sequence[float] | None = None
) -> tuple[int, ...]:
    """Voxels of context each spatial axis needs for exact blockwise results.

    Computing features on ``block`` grown by this halo (clipped at the image edge) and cropping
    back to ``block`` gives the same values as computing the whole image. z gets no halo when
    every selected feature is computed in 2D.

    Returns
    -------
    tuple of int
        One entry per spatial axis, (z, y, x) or (y, x).
    """
    specs = normalize_selection(selection)
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    sizes = check_voxel_size(voxel_size, ndim)
    halo = _internal_halo(_groups(specs, ndim, sizes, 1))
    return halo[3 - ndim :]


def _mirror(coordinates: np.ndarray, extent: int) -> np.ndarray:
    """Reflect coordinates into [0, extent) without repeating the edge (scipy 'mirror')."""
    if extent == 1:
        return np.zeros_like(coordinates)
    period = 2 * (extent - 1)
    folded = np.mod(coordinates, period)
    return np.where(folded >= extent, period - folded, folded)


def _fill_mirror(backend: Backend, array: Any, axis: int, origin: int, extent: int) -> None:
    """Overwrite the positions of ``array`` outside the image along ``axis`` by their mirror.

    ``array`` covers image coordinates ``[origin, origin + array.shape[axis])``.
    """
    length = array.shape[axis]
    before = max(0, min(-origin, length))
    after_start = max(0, extent - origin)
    if before:
        sources = _mirror(np.arange(origin, origin + before), extent) - origin
        backend.copy_rows(array, axis, 0, sources)
    if after_start < length:
        coordinates = np.arange(origin + after_start, origin + length)
        backend.copy_rows(array, axis, after_start, _mirror(coordinates, extent) - origin)


def _crop(array: Any, margins: Sequence[int]) -> Any:
    """Remove ``margins[a]`` elements from both ends of each axis (a view)."""
    index = tuple(slice(m, array.shape[a] - m) for a, m in enumerate(margins))
    return array[index]


class _Derivatives:
    """Separable Gaussian derivatives of one presmoothed tile, sharing partial passes.

    Passes run x, then y, then z; a derivative of orders (oz, oy, ox) reuses every earlier
    derivative that starts with the same passes. Results keep no margin, except the
    structure tensor's gradients (kind "tensor"), which keep ``tensor_target`` for their
    smoothing.
    """

    def __init__(
        self,
        backend: Backend,
        smoothed: Any,
        margins: Sequence[int],
        plan: ScalePlan,
        tensor_target: Sequence[int],
    ) -> None:
        self._backend = backend
        self._smoothed = smoothed
        self._margins = tuple(margins)
        self._plan = plan
        self._tensor_target = tuple(tensor_target)
        self._cache: dict[tuple, tuple[Any, tuple[int, ...]]] = {}

    def _kernel(self, axis: AxisPlan, order: int, kind: str) -> np.ndarray:
        if kind == "tensor":  # the structure tensor's own, finer gradient
            return axis.tensor_first if order == 1 else axis.tensor_smooth
        if order == 2:
            return axis.second
        if order == 1:
            return axis.first
        return axis.dog if kind == "dog" else axis.smooth

    def get(self, orders: Sequence[int], kind: str = "smooth") -> Any:
        array, margins = self._smoothed, self._margins
        target = self._tensor_target if kind == "tensor" else (0, 0, 0)
        key: tuple = (kind,)
        for a in (2, 1, 0):
            axis = self._plan.axes[a]
            if not axis.active:
                continue
            key += ((a, orders[a]),)
            if key in self._cache:
                array, margins = self._cache[key]
                continue
            kernel = self._kernel(axis, orders[a], kind)
            excess = margins[a] - target[a] - len(kernel) // 2
            crop = [0, 0, 0]
            crop[a] = excess
            array = self._backend.correlate(_crop(array, crop), kernel, a)
            margins = tuple(target[b] if b == a else margins[b] for b in range(3))
            self._cache[key] = (array, margins)
        excess = [m - t for m, t in zip(margins, target, strict=True)]
        return _crop(array, excess) if any(excess) else array


def _unit(axis: int, order: int) -> tuple[int, int, int]:
    orders = [0, 0, 0]
    orders[axis] += order
    return tuple(orders)  # type: ignore[return-value]


def _pair(a: int, b: int) -> tuple[int, int, int]:
    orders = [0, 0, 0]
    orders[a] += 1
    orders[b] += 1
    return tuple(orders)  # type: ignore[return-value]


def _compute_group(
    backend: Backend,
    read: Any,
    read_halo: Sequence[int],
    group: _Group,
    tile_start: Sequence[int],
    image_shape: Sequence[int],
    targets: dict[str, np.ndarray],
) -> None:
    """Features of one scale group on one tile, written to ``targets[feature_id]``, the
    (k, *tile) numpy views of the output."""
    plan = group.plan
    active = plan.active_axes
    halo = group.halo
    array = _crop(read, [rh - h for rh, h in zip(read_halo, halo, strict=True)])
    for a in active:
        array = backend.correlate(array, plan.axes[a].presmooth, a)
    margins = plan.feature_margin(group.feature_ids)
    wants_tensor = "StructureTensorEigenvalues" in group.feature_ids
    target = [
        AxisPlan.radius(plan.axes[a].outer) if wants_tensor and a in active else 0 for a in range(3)
    ]
    derivatives = _Derivatives(backend, array, margins, plan, target)
    final = derivatives.get

    ids = group.feature_ids
    if "GaussianSmoothing" in ids:
        backend.store(targets["GaussianSmoothing"], final((0, 0, 0)))
    if "LaplacianOfGaussian" in ids:
        total = None
        for a in active:
            term = final(_unit(a, 2))
            total = term if total is None else backend.add(total, term)
        backend.store(targets["LaplacianOfGaussian"], total)
    if "GaussianGradientMagnitude" in ids:
        total = None
        for a in active:
            term = final(_unit(a, 1))
            square = backend.multiply(term, term)
            total = square if total is None else backend.add(total, square)
        backend.store(targets["GaussianGradientMagnitude"], backend.sqrt(total))
    if "DifferenceOfGaussians" in ids:
        difference = backend.subtract(final((0, 0, 0)), final((0, 0, 0), "dog"))
        backend.store(targets["DifferenceOfGaussians"], difference)
    if "HessianOfGaussianEigenvalues" in ids:
        components = [final(_pair(a, b)) for a, b in _upper_triangle(active)]
        backend.eigenvalues(components, out=targets["HessianOfGaussianEigenvalues"])
    if wants_tensor:
        gradients = {a: derivatives.get(_unit(a, 1), "tensor") for a in active}
        pairs = _upper_triangle(active)
        tile_shape = _crop(gradients[active[0]], target).shape
        components = [backend.empty(tile_shape) for _ in pairs]
        for component, (a, b) in zip(components, pairs, strict=True):
            with scratch():  # the product and its partial smoothings die here
                product = backend.multiply(gradients[a], gradients[b])
                for axis in active:
                    origin = tile_start[axis] - target[axis]
                    _fill_mirror(backend, product, axis, origin, image_shape[axis])
                for axis in active:
                    product = backend.correlate(product, plan.axes[axis].outer, axis)
                component[...] = product
        backend.eigenvalues(components, out=targets["StructureTensorEigenvalues"])


def _upper_triangle(axes: Sequence[int]) -> list[tuple[int, int]]:
    return [(a, b) for i, a in enumerate(axes) for b in axes[i:]]


def _tiles(shape: Sequence[int], tile: Sequence[int]) -> list[tuple[slice, ...]]:
    ranges = [
        [slice(start, min(start + t, n)) for start in range(0, n, t)]
        for n, t in zip(shape, tile, strict=True)
    ]
    return [tuple(s) for s in itertools.product(*ranges)]


def _read_mirrored(
    backend: Backend, channel: np.ndarray, tile: tuple[slice, ...], halo: Sequence[int]
) -> Any:
    """The tile grown by ``halo``, clipped to the image and mirrored beyond it."""
    shape = channel.shape
    starts = [s.start - h for s, h in zip(tile, halo, strict=True)]
    stops = [s.stop + h for s, h in zip(tile, halo, strict=True)]
    read = tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(starts, stops, shape, strict=True))
    source = channel[read]
    if all(r.start == a and r.stop == b for r, a, b in zip(read, starts, stops, strict=True)):
        return backend.from_numpy(source)
    array = backend.empty(tuple(b - a for a, b in zip(starts, stops, strict=True)))
    inner = tuple(slice(r.start - a, r.stop - a) for r, a in zip(read, starts, strict=True))
    array[inner] = backend.from_numpy(source)
    for axis in range(3):
        _fill_mirror(backend, array, axis, starts[axis], shape[axis])
    return array


def _check_image(image: Any, ndim: int) -> np.ndarray:
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    array = np.asarray(image)
    if array.ndim != ndim + 1:
        raise ValueError(
            f"image must be (channels, *spatial) with {ndim} spatial axes, got shape {array.shape}"
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(f"image must be numeric, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    return array


def compute_features(
    image: Any,
    selection: Selection,
    *,
    ndim: int,
    voxel_size: Sequence[float] | None = None,
    device: Any = None,
    out: np.ndarray | None = None,
    backend: str | None = None,
    tile_shape: Sequence[int] | None = None,
    region: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """ilastik's pixel features of an image, in ilastik's channel order.

    Parameters
    ----------
    image : array_like
        (input_channels, *spatial) with ``len(spatial) == ndim``; any real dtype, computed in
        float32.
    selection : "all" or iterable of FeatureSpec / (feature_id, sigma[, in_2d])
        See :func:`filters.normalize_selection`.
    ndim : {2, 3}
        Number of spatial axes.
    voxel_size : sequence of float, optional
        Voxel size per spatial axis (any unit). σ is then measured in units of the finest
        axis and shrinks along coarser ones; derivatives are per finest-voxel unit.
        Default: isotropic, exactly ilastik.
    device : None, str or torch.device
        None: CUDA when available, else the CPU.
    out : ndarray, optional
        float32 (channels, *region shape) array to write into.
    backend : {"numba", "torch"}, optional
        Force an implementation (default: numba on the CPU, torch on CUDA).
    tile_shape : sequence of int, optional
        Internal tile per spatial axis (default 128³ in 3D, 1024² in 2D).
    region : sequence of (start, stop), optional
        Compute only this part of the image, one pair per spatial axis: the result equals
        the whole image's features cropped to it, while the rest of the image serves as
        context only. A block read with its halo (:func:`required_halo`) then costs the
        block's features, not those of the halo too: for a one-plane tile of a 3D image
        that is a small fraction.

    Returns
    -------
    ndarray
        float32 (channels, *region shape); feature, then scale, then input channel, then
        eigenvalue (descending).
    """
    array = _check_image(image, ndim)
    specs = normalize_selection(selection)
    sizes = check_voxel_size(voxel_size, ndim)
    engine = get_backend(device, backend)
    inputs = array.shape[0]
    channels = num_channels(specs, ndim=ndim, input_channels=inputs)
    bounds = _check_region(region, array.shape[1:])
    expected = (channels, *(stop - start for start, stop in bounds))
    if out is None:
        out = np.empty(expected, dtype=np.float32)
    elif out.shape != expected or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {expected}, got {out.dtype} {out.shape}")

    volume = array if ndim == 3 else array[:, None]
    target = out if ndim == 3 else out[:, None]
    tile = _tile_shape(tile_shape, ndim)
    groups = _groups(specs, ndim, sizes, inputs)
    halo = _internal_halo(groups)
    if ndim == 2:
        bounds = [(0, 1), *bounds]
    threads = _task_threads() if engine.parallel_tasks and volume[0].size >= TASK_MIN_VOXELS \
        else 1
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="filters") \
        if threads > 1 else None
    try:
        with workspace():
            for out_slices in _tiles([stop - start for start, stop in bounds], tile):
                tile_slices = tuple(slice(s.start + start, s.stop + start)
                                    for s, (start, _) in zip(out_slices, bounds, strict=True))
                for c in range(inputs):
                    with scratch():
                        _compute_tile(engine, volume[c], target, c, tile_slices, groups, halo,
                                      pool, out_slices)
    finally:
        if pool is not None:
            pool.shutdown()
    return out


TASK_MIN_VOXELS = 1 << 18
"""Below this many voxels per channel the scale groups run one after another."""

def _task_threads() -> int:
    """Threads that run scale groups side by side: the caller's numba thread count.

    Coarse tasks with single-threaded kernels (numba releases the GIL) replace hundreds of
    short parallel regions: on a shared machine each region's barrier waits for the slowest,
    possibly descheduled, thread. ``numba.set_num_threads`` in the calling thread bounds
    them, so a server worker limited to one thread stays on one core.
    """
    import numba

    return int(numba.get_num_threads())


def _compute_tile(
    backend: Backend,
    channel: np.ndarray,
    target: np.ndarray,
    input_channel: int,
    tile_slices: tuple[slice, ...],
    groups: Sequence[_Group],
    halo: Sequence[int],
    pool: ThreadPoolExecutor | None = None,
    out_slices: tuple[slice, ...] | None = None,
) -> None:
    """Every feature of one input channel on one tile (``tile_slices`` of the image),
    written into ``target`` at ``out_slices`` (default: the same)."""
    out_slices = tile_slices if out_slices is None else out_slices
    read = _read_mirrored(backend, channel, tile_slices, halo)
    tile_start = [s.start for s in tile_slices]

    def run(group: _Group) -> None:
        views: dict[str, list[np.ndarray]] = {}
        for spec, first, count in group.outputs:
            channels = slice(first + input_channel * count, first + (input_channel + 1) * count)
            views.setdefault(spec.feature_id, []).append(target[(channels, *out_slices)])
        targets = {feature_id: v[0] for feature_id, v in views.items()}
        with scratch():
            _compute_group(backend, read, halo, group, tile_start, channel.shape, targets)
        for first_view, *duplicates in views.values():
            for duplicate in duplicates:  # "in 2D" on a 2D image: the same feature twice
                duplicate[...] = first_view

    if pool is None:
        for group in groups:
            run(group)
        return

    def task(group: _Group) -> None:
        with workspace(), serial_kernels():
            run(group)

    # largest σ first: the longest tasks start early, the short ones fill in
    ordered = sorted(groups, key=lambda group: sum(group.halo), reverse=True)
    for future in [pool.submit(task, group) for group in ordered]:
        future.result()


def _check_region(region: Sequence[tuple[int, int]] | None,
                  spatial: Sequence[int]) -> list[tuple[int, int]]:
    """(start, stop) per spatial axis inside the image; the whole image by default."""
    if region is None:
        return [(0, int(n)) for n in spatial]
    bounds = [(int(start), int(stop)) for start, stop in region]
    if len(bounds) != len(spatial) or any(
            not 0 <= start < stop <= n for (start, stop), n in zip(bounds, spatial, strict=True)):
        raise ValueError(f"region must be one non-empty (start, stop) pair inside the image "
                         f"per spatial axis {tuple(spatial)}, got {region!r}")
    return bounds


def _tile_shape(tile_shape: Sequence[int] | None, ndim: int) -> tuple[int, int, int]:
    if tile_shape is None:
        return DEFAULT_TILE_3D if ndim == 3 else DEFAULT_TILE_2D
    values = tuple(int(t) for t in tile_shape)
    if len(values) != ndim or any(t < 1 for t in values):
        raise ValueError(f"tile_shape must be {ndim} positive integers, got {tile_shape!r}")
    return values if ndim == 3 else (1, *values)  # type: ignore[return-value]
