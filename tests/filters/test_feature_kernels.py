"""Kernels: vigra's radius rule, normalisation and ilastik's halo."""

from __future__ import annotations

import math

import numpy as np
import pytest

import filters
from filters.kernels import gaussian_kernel, kernel_radius


@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.0, 1.6, 3.354, 9.95])
@pytest.mark.parametrize("window", [2.0, 3.5])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_kernel_is_exact_on_polynomials_of_its_order(sigma: float, window: float, order: int):
    kernel = gaussian_kernel(sigma, order, window)
    radius = len(kernel) // 2
    assert radius == kernel_radius(sigma, window, order)
    offsets = np.arange(-radius, radius + 1)
    # correlating x**order / order! gives 1; lower powers give 0
    assert np.sum(kernel * offsets**order) / math.factorial(order) == pytest.approx(1.0)
    for power in range(order):
        assert np.sum(kernel * offsets**power) == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(kernel, (-1) ** order * kernel[::-1])


def test_radius_rule_is_vigras() -> None:
    assert kernel_radius(0.7, 2.0) == 1
    assert kernel_radius(1.0, 2.0) == 2
    assert kernel_radius(1.0, 3.5) == 4
    assert kernel_radius(math.sqrt(99), 3.5) == 35
    assert kernel_radius(0.1, 2.0, order=1) == 1  # a derivative keeps one tap each side


def test_zero_sigma_is_the_identity() -> None:
    assert gaussian_kernel(0.0, 0, 3.5).tolist() == [1.0]
    with pytest.raises(ValueError, match="derivative needs sigma > 0"):
        gaussian_kernel(0.0, 1, 2.0)


def test_required_halo_matches_ilastiks_rule() -> None:
    # ilastik: 3 + ceil(3.5 * max(0.7, sigma_max)); sigma 10 needs 38
    assert filters.required_halo("all", ndim=3) == (38, 38, 38)
    assert filters.required_halo("all", ndim=2) == (38, 38)
    for sigma in filters.DEFAULT_SCALES[1:]:
        halo = filters.required_halo([("StructureTensorEigenvalues", sigma)], ndim=3)
        assert max(halo) <= 3 + math.ceil(3.5 * max(0.7, sigma))


def test_in_2d_selection_needs_no_z_halo() -> None:
    selection = [("HessianOfGaussianEigenvalues", 3.5, True), ("GaussianSmoothing", 1.0, True)]
    halo = filters.required_halo(selection, ndim=3)
    assert halo[0] == 0 and halo[1] == halo[2] > 0


def test_anisotropic_halo_shrinks_along_coarse_axes() -> None:
    halo = filters.required_halo([("GaussianSmoothing", 5.0)], ndim=3, voxel_size=(40, 4, 4))
    isotropic = filters.required_halo([("GaussianSmoothing", 5.0)], ndim=3)
    assert halo[1:] == isotropic[1:]
    assert halo[0] < isotropic[0] / 5
