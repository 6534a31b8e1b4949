"""Feature selections: ilastik's feature ids, scales, channel order and channel names."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FEATURE_IDS: tuple[str, ...] = (
    "GaussianSmoothing",
    "LaplacianOfGaussian",
    "GaussianGradientMagnitude",
    "DifferenceOfGaussians",
    "StructureTensorEigenvalues",
    "HessianOfGaussianEigenvalues",
)
"""The `.ilp` FeatureIds, in ilastik's (and our output's) order."""

DEFAULT_SCALES: tuple[float, ...] = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
"""ilastik's default scale columns."""

MAX_SIGMA = 128.0
"""Largest σ accepted: beyond it the halo alone would dwarf any sensible block."""

FEATURE_NAMES: dict[str, str] = {
    "GaussianSmoothing": "Gaussian Smoothing",
    "LaplacianOfGaussian": "Laplacian of Gaussian",
    "GaussianGradientMagnitude": "Gaussian Gradient Magnitude",
    "DifferenceOfGaussians": "Difference of Gaussians",
    "StructureTensorEigenvalues": "Structure Tensor Eigenvalues",
    "HessianOfGaussianEigenvalues": "Hessian of Gaussian Eigenvalues",
}

EIGENVALUE_FEATURES = frozenset({"StructureTensorEigenvalues", "HessianOfGaussianEigenvalues"})


@dataclass(frozen=True, order=False)
class FeatureSpec:
    """One column of ilastik's selection matrix: a feature at one scale.

    Parameters
    ----------
    feature_id : str
        One of :data:`FEATURE_IDS`.
    sigma : float
        The scale σ in voxels (in units of the finest voxel size when anisotropic).
    in_2d : bool
        Compute per z-slice in 2D on a 3D image (ilastik's ComputeIn2d).
    """

    feature_id: str
    sigma: float
    in_2d: bool = False

    def __post_init__(self) -> None:
        if self.feature_id not in FEATURE_IDS:
            raise ValueError(
                f"unknown feature id {self.feature_id!r}; expected one of {', '.join(FEATURE_IDS)}"
            )
        try:
            sigma = float(self.sigma)
        except (TypeError, ValueError):
            raise ValueError(f"sigma must be a number, got {self.sigma!r}") from None
        if not (math.isfinite(sigma) and 0.0 < sigma <= MAX_SIGMA):
            raise ValueError(f"sigma must be finite and in (0, {MAX_SIGMA:g}], got {self.sigma!r}")
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "in_2d", bool(self.in_2d))

    def sort_key(self) -> tuple[int, float, bool]:
        """ilastik's channel order: feature, then scale."""
        return (FEATURE_IDS.index(self.feature_id), self.sigma, self.in_2d)

    def eigenvalue_count(self, ndim: int) -> int:
        """Channels per input channel: the dimensionality for eigenvalue features, else 1."""
        if self.feature_id not in EIGENVALUE_FEATURES:
            return 1
        return 2 if (ndim == 2 or self.in_2d) else 3

    def name(self) -> str:
        """ilastik's feature name, e.g. ``"Gaussian Smoothing (σ=0.3)"``."""
        suffix = " in 2D" if self.in_2d else ""
        return f"{FEATURE_NAMES[self.feature_id]} (σ={self.sigma}){suffix}"


SelectionItem = FeatureSpec | tuple
Selection = str | Iterable[SelectionItem]


def default_selection() -> tuple[FeatureSpec, ...]:
    """ilastik's full default matrix: every feature at every scale, σ 0.3 only for smoothing."""
    specs = []
    for feature_id in FEATURE_IDS:
        for sigma in DEFAULT_SCALES:
            if sigma < 0.5 and feature_id != "GaussianSmoothing":
                continue
            specs.append(FeatureSpec(feature_id, sigma))
    return tuple(specs)


def _as_spec(item: SelectionItem) -> FeatureSpec:
    if isinstance(item, FeatureSpec):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return FeatureSpec(*item)
    raise ValueError(
        f"a selection item must be a FeatureSpec or (feature_id, sigma[, in_2d]), got {item!r}"
    )


def normalize_selection(selection: Selection) -> tuple[FeatureSpec, ...]:
    """Validate a selection and put it in ilastik's channel order, without duplicates.

    Parameters
    ----------
    selection : "all" or iterable of FeatureSpec or (feature_id, sigma[, in_2d]) tuples

    Returns
    -------
    tuple of FeatureSpec
        Sorted by feature (in :data:`FEATURE_IDS` order), then σ.

    Raises
    ------
    ValueError
        For an unknown feature id, a bad σ, a malformed item or an empty selection.
    """
    if isinstance(selection, str):
        if selection != "all":
            raise ValueError(f'selection must be "all" or a list of features, got {selection!r}')
        return default_selection()
    if isinstance(selection, FeatureSpec):
        selection = [selection]
    try:
        items = list(selection)
    except TypeError:
        raise ValueError(f"selection must be iterable, got {type(selection).__name__}") from None
    specs = sorted({_as_spec(item) for item in items}, key=FeatureSpec.sort_key)
    if not specs:
        raise ValueError("selection is empty")
    return tuple(specs)


def num_channels(selection: Selection, *, ndim: int, input_channels: int = 1) -> int:
    """Number of output channels of :func:`filters.compute_features` for this selection."""
    _check_ndim(ndim)
    specs = normalize_selection(selection)
    return input_channels * sum(spec.eigenvalue_count(ndim) for spec in specs)


def channel_names(selection: Selection, *, ndim: int, input_channels: int = 1) -> list[str]:
    """ilastik's names of the output channels, in output order.

    Exactly the names desktop ilastik stores with its forests (``feature_names`` in an
    ``.ilp``): ``"Gaussian Smoothing (σ=0.3)"``, ``"… (σ=1.0) in 2D"``, and for a feature
    with several channels ``" [k]"`` with k running over input channel, then eigenvalue
    (eigenvalue 0 is the largest), e.g. ``"Hessian of Gaussian Eigenvalues (σ=1.0) [3]"``.
    """
    _check_ndim(ndim)
    names = []
    for spec in normalize_selection(selection):
        count = spec.eigenvalue_count(ndim) * input_channels
        if count == 1:
            names.append(spec.name())
        else:
            names += [f"{spec.name()} [{k}]" for k in range(count)]
    return names


def _check_ndim(ndim: int) -> None:
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")


def check_voxel_size(voxel_size: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    """Validate a per-axis voxel size; None stays None (isotropic, exactly ilastik)."""
    if voxel_size is None:
        return None
    try:
        sizes = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise ValueError(f"voxel_size must be {ndim} numbers, got {voxel_size!r}") from None
    if len(sizes) != ndim or not all(math.isfinite(v) and v > 0 for v in sizes):
        raise ValueError(f"voxel_size must be {ndim} positive numbers, got {voxel_size!r}")
    return sizes
