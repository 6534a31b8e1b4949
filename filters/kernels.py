"""Sampled Gaussian kernels and ilastik's presmoothing scheme, per spatial axis.

Kernels follow vigra's construction so results match it to float32 round-off: the analytic
Gaussian (or its derivative) sampled on integers within radius ``int(window * σ + 0.5)``;
order 0 normalised to unit sum, derivative kernels with their mean removed and scaled to unit
moment (they return exactly 1 on ``x**k / k!``).

ilastik's scheme for a scale σ: for σ > 1 the image is presmoothed with ``sqrt(σ² - 1)`` and the
feature filter runs at s = 1.0; for σ <= 1 the presmoothing and the filter both use s = σ.
Presmoothing uses window 3.5, feature filters window 2 (fastfilters' radius
``floor(window * σ + 0.5)``, the same as vigra's).

Structure tensor: desktop ilastik computes it with fastfilters, whose Python binding hands
the two scales to the C code in the opposite order to the one lazyflow names them in. The
gradient is therefore taken at 0.5·s and the tensor smoothed at s (vigra's
``structureTensor(image, 0.5 * s, s)``), not gradient at s and smoothing at 0.5·s as vigra's
reading of lazyflow's call would give. We follow desktop ilastik: its stored forests
reproduce its predictions only with this order.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PRESMOOTH_WINDOW = 3.5
FEATURE_WINDOW = 2.0
DOG_RATIO = 0.66
STRUCTURE_TENSOR_GRADIENT_RATIO = 0.5
"""The structure tensor's gradient scale relative to s; its smoothing runs at s itself."""
INTERNAL_NDIM = 3


def kernel_radius(sigma: float, window: float, order: int = 0) -> int:
    """vigra's radius for a window size; derivatives get at least one tap each side."""
    radius = int(window * sigma + 0.5)
    return max(radius, 1) if order > 0 else radius


@functools.lru_cache(maxsize=256)
def gaussian_kernel(sigma: float, order: int, window: float) -> np.ndarray:
    """Correlation kernel of the σ-Gaussian's ``order``-th derivative, float64, length 2r+1.

    ``out[i] = sum_j kernel[j] * f[i + j - r]``. A σ of 0 gives the identity kernel.
    """
    if order not in (0, 1, 2):
        raise ValueError(f"derivative order must be 0, 1 or 2, got {order}")
    if sigma <= 0:
        if order:
            raise ValueError("a derivative needs sigma > 0")
        return np.ones(1)
    radius = kernel_radius(sigma, window, order)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-(x * x) / (2.0 * sigma * sigma))
    if order == 0:
        kernel = gauss
    elif order == 1:
        kernel = x * gauss
    else:
        kernel = (x * x / sigma**2 - 1.0) * gauss
    if order > 0:
        kernel = kernel - kernel.mean()
    moment = float(np.sum(kernel * x**order)) / math.factorial(order)
    kernel = kernel / moment
    # exact (anti)symmetry, so backends may fold the taps pairwise
    kernel = 0.5 * (kernel + (-1) ** order * kernel[::-1])
    kernel.setflags(write=False)
    return kernel


@dataclass(frozen=True)
class AxisPlan:
    """Kernels of one scale along one internal axis (z, y or x).

    ``derivative_scale`` turns voxel derivatives into derivatives per finest-voxel unit on
    anisotropic grids (1.0 when isotropic).
    """

    sigma: float
    presmooth: np.ndarray
    smooth: np.ndarray
    first: np.ndarray
    second: np.ndarray
    dog: np.ndarray
    tensor_smooth: np.ndarray  # the structure tensor's gradient: smoothing at 0.5·s
    tensor_first: np.ndarray  # ... and first derivative at 0.5·s
    outer: np.ndarray  # the structure tensor's smoothing at s

    @property
    def active(self) -> bool:
        return self.sigma > 0

    @staticmethod
    def radius(kernel: np.ndarray) -> int:
        return len(kernel) // 2


@dataclass(frozen=True)
class ScalePlan:
    """Kernels of one (σ, in_2d) group for internal (z, y, x) arrays."""

    axes: tuple[AxisPlan, AxisPlan, AxisPlan]

    @property
    def active_axes(self) -> tuple[int, ...]:
        return tuple(a for a, axis in enumerate(self.axes) if axis.active)

    def feature_margin(self, feature_ids: frozenset[str]) -> tuple[int, ...]:
        """Per axis, how far the feature filters reach into the presmoothed image."""
        margins = []
        for axis in self.axes:
            if not axis.active:
                margins.append(0)
                continue
            reach = 0
            for feature_id in feature_ids:
                reach = max(reach, _feature_reach(axis, feature_id))
            margins.append(reach)
        return tuple(margins)

    def halo(self, feature_ids: frozenset[str]) -> tuple[int, ...]:
        """Per axis, how far the whole computation reaches into the input."""
        return tuple(
            m + AxisPlan.radius(axis.presmooth) if axis.active else 0
            for m, axis in zip(self.feature_margin(feature_ids), self.axes, strict=True)
        )


def _feature_reach(axis: AxisPlan, feature_id: str) -> int:
    r = AxisPlan.radius
    if feature_id == "GaussianSmoothing":
        return r(axis.smooth)
    if feature_id == "DifferenceOfGaussians":
        return max(r(axis.smooth), r(axis.dog))
    if feature_id == "StructureTensorEigenvalues":
        return max(r(axis.tensor_smooth), r(axis.tensor_first)) + r(axis.outer)
    return max(r(axis.smooth), r(axis.first), r(axis.second))


def axis_sigmas(
    sigma: float, in_2d: bool, ndim: int, voxel_size: Sequence[float] | None
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """σ in voxels and the voxel size relative to the finest axis, for internal (z, y, x).

    A 2D image is a z extent of 1 with no filtering along z; ``in_2d`` switches z off too.
    """
    spatial = tuple(voxel_size) if voxel_size is not None else (1.0,) * ndim
    if ndim == 2:
        spatial = (1.0, *spatial)
    active = (ndim == 3 and not in_2d, True, True)
    finest = min(v for v, on in zip(spatial, active, strict=True) if on)
    relative = tuple(v / finest for v in spatial)
    sigmas = tuple(sigma / rel if on else 0.0 for rel, on in zip(relative, active, strict=True))
    return sigmas, relative  # type: ignore[return-value]


@functools.lru_cache(maxsize=256)
def plan_scale(
    sigma: float, in_2d: bool, ndim: int, voxel_size: tuple[float, ...] | None = None
) -> ScalePlan:
    """Kernels of ilastik's presmoothing scheme for one scale, per internal axis."""
    sigmas, relative = axis_sigmas(sigma, in_2d, ndim, voxel_size)
    axes = []
    for axis_sigma, rel in zip(sigmas, relative, strict=True):
        if axis_sigma <= 0:
            identity = np.ones(1)
            axes.append(AxisPlan(0.0, *(identity,) * 8))
            continue
        if axis_sigma > 1.0:
            presmooth_sigma, filter_sigma = math.sqrt(axis_sigma**2 - 1.0), 1.0
        else:
            presmooth_sigma, filter_sigma = axis_sigma, axis_sigma
        tensor_sigma = filter_sigma * STRUCTURE_TENSOR_GRADIENT_RATIO
        axes.append(
            AxisPlan(
                sigma=axis_sigma,
                presmooth=gaussian_kernel(presmooth_sigma, 0, PRESMOOTH_WINDOW),
                smooth=gaussian_kernel(filter_sigma, 0, FEATURE_WINDOW),
                first=gaussian_kernel(filter_sigma, 1, FEATURE_WINDOW) / rel,
                second=gaussian_kernel(filter_sigma, 2, FEATURE_WINDOW) / rel**2,
                dog=gaussian_kernel(filter_sigma * DOG_RATIO, 0, FEATURE_WINDOW),
                tensor_smooth=gaussian_kernel(tensor_sigma, 0, FEATURE_WINDOW),
                tensor_first=gaussian_kernel(tensor_sigma, 1, FEATURE_WINDOW) / rel,
                outer=gaussian_kernel(filter_sigma, 0, FEATURE_WINDOW),
            )
        )
    return ScalePlan(tuple(axes))  # type: ignore[arg-type]
