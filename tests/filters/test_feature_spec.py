"""Selections, channel order and names: ilastik's conventions."""

from __future__ import annotations

import pytest

import filters
from filters import FeatureSpec


def test_feature_ids_and_scales_are_ilastiks() -> None:
    assert filters.FEATURE_IDS == (
        "GaussianSmoothing",
        "LaplacianOfGaussian",
        "GaussianGradientMagnitude",
        "DifferenceOfGaussians",
        "StructureTensorEigenvalues",
        "HessianOfGaussianEigenvalues",
    )
    assert filters.DEFAULT_SCALES == (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)


@pytest.mark.parametrize(("ndim", "inputs", "expected"), [(2, 1, 49), (3, 1, 61), (3, 2, 122)])
def test_all_has_ilastiks_channel_count(ndim: int, inputs: int, expected: int) -> None:
    assert filters.num_channels("all", ndim=ndim, input_channels=inputs) == expected
    assert len(filters.channel_names("all", ndim=ndim, input_channels=inputs)) == expected


def test_all_smooths_at_0_3_only() -> None:
    specs = filters.normalize_selection("all")
    assert [s.sigma for s in specs if s.sigma == 0.3] == [0.3]
    assert specs[0] == FeatureSpec("GaussianSmoothing", 0.3)


def test_selection_is_sorted_by_feature_then_scale_and_deduplicated() -> None:
    specs = filters.normalize_selection(
        [
            ("HessianOfGaussianEigenvalues", 1.0),
            ("GaussianSmoothing", 3.5),
            ("GaussianSmoothing", 0.7, True),
            FeatureSpec("GaussianSmoothing", 3.5),
            ["LaplacianOfGaussian", 1],
        ]
    )
    assert specs == (
        FeatureSpec("GaussianSmoothing", 0.7, True),
        FeatureSpec("GaussianSmoothing", 3.5),
        FeatureSpec("LaplacianOfGaussian", 1.0),
        FeatureSpec("HessianOfGaussianEigenvalues", 1.0),
    )


def test_feature_spec_is_hashable_and_normalises_sigma() -> None:
    assert hash(FeatureSpec("GaussianSmoothing", 1)) == hash(FeatureSpec("GaussianSmoothing", 1.0))
    assert {FeatureSpec("GaussianSmoothing", 1): 1}[FeatureSpec("GaussianSmoothing", 1.0)] == 1


def test_channel_names_follow_ilastik() -> None:
    selection = [("GaussianSmoothing", 0.3), ("HessianOfGaussianEigenvalues", 1.0)]
    names = filters.channel_names(selection, ndim=3, input_channels=2)
    # desktop ilastik's names (as stored in an .ilp's feature_names): " [k]" over input
    # channel, then eigenvalue
    assert names == [
        "Gaussian Smoothing (σ=0.3) [0]",
        "Gaussian Smoothing (σ=0.3) [1]",
        *[f"Hessian of Gaussian Eigenvalues (σ=1.0) [{k}]" for k in range(6)],
    ]
    assert filters.channel_names(selection, ndim=2) == [
        "Gaussian Smoothing (σ=0.3)",
        "Hessian of Gaussian Eigenvalues (σ=1.0) [0]",
        "Hessian of Gaussian Eigenvalues (σ=1.0) [1]",
    ]
    in_2d = filters.channel_names([("StructureTensorEigenvalues", 1.6, True)], ndim=3)
    assert in_2d == [
        "Structure Tensor Eigenvalues (σ=1.6) in 2D [0]",
        "Structure Tensor Eigenvalues (σ=1.6) in 2D [1]",
    ]


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ([("Gaussian", 1.0)], "unknown feature id 'Gaussian'"),
        ([("GaussianSmoothing", 0.0)], "sigma must be finite"),
        ([("GaussianSmoothing", -1.0)], "sigma must be finite"),
        ([("GaussianSmoothing", float("nan"))], "sigma must be finite"),
        ([("GaussianSmoothing", 1e6)], "sigma must be finite"),
        ([("GaussianSmoothing", "big")], "sigma must be a number"),
        ([("GaussianSmoothing",)], "a selection item must be"),
        (["GaussianSmoothing"], "a selection item must be"),
        ([], "selection is empty"),
        ("everything", 'selection must be "all"'),
        (3, "selection must be iterable"),
    ],
)
def test_bad_selection_is_a_one_line_value_error(selection: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        filters.normalize_selection(selection)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_bad_ndim_is_rejected() -> None:
    with pytest.raises(ValueError, match="ndim must be 2 or 3"):
        filters.num_channels("all", ndim=4)
