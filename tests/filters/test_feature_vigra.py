"""Faithfulness: every feature × scale, 2D, 3D and in 2D, against vigra (ilastik's library).

Errors are max |ours - vigra| over the channel's range. Eigenvalue channels are compared twice:
against vigra's float32 eigensolver, and against float64 LAPACK eigenvalues of vigra's own
tensors. Ours evaluate the closed form in float64, so they track the second; the first differs
where vigra's float32 solver loses precision (its own error is then reported alongside).
"""

from __future__ import annotations

import logging

import pytest
from feature_images import structured_image
from vigra_reference import relative_errors, vigra_features, vigra_unavailable_reason

import filters

logger = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.vigra,
    pytest.mark.skipif(
        vigra_unavailable_reason() is not None, reason=str(vigra_unavailable_reason())
    ),
]

SMOOTHING_TOLERANCE = 1e-3
EIGENVALUE_TOLERANCE = 1e-2
EIGENVALUE_FEATURES = {"StructureTensorEigenvalues", "HessianOfGaussianEigenvalues"}

CASES = {
    "2d": (2, (64, 70), "all"),
    "3d": (3, (40, 44, 48), "all"),
    "3d-in-2d": (
        3,
        (3, 50, 47),
        [(spec.feature_id, spec.sigma, True) for spec in filters.default_selection()],
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def comparison(request: pytest.FixtureRequest):
    ndim, shape, selection = CASES[request.param]
    image = structured_image(shape, seed=len(shape))
    ours = filters.compute_features(image, selection, ndim=ndim)
    reference = vigra_features(image, selection, ndim=ndim)
    exact = vigra_features(image, selection, ndim=ndim, exact_eigenvalues=True)
    names = filters.channel_names(selection, ndim=ndim)
    errors = relative_errors(ours, reference)
    exact_errors = relative_errors(ours, exact)
    vigra_errors = relative_errors(reference, exact)
    for name, e, x, v in zip(names, errors, exact_errors, vigra_errors, strict=True):
        logger.info(
            "%s %s: vs vigra %.1e, vs exact %.1e, vigra vs exact %.1e", request.param, name, e, x, v
        )
    return request.param, names, errors, exact_errors, vigra_errors


def _is_eigenvalue(name: str) -> bool:
    return "Eigenvalues" in name


def test_shapes_and_order_match_vigra(comparison) -> None:
    _, names, errors, _, _ = comparison
    assert len(names) == len(errors)


def test_smoothing_and_derivative_features_match_vigra(comparison) -> None:
    case, names, errors, _, _ = comparison
    bad = {
        n: f"{e:.1e}"
        for n, e in zip(names, errors, strict=True)
        if not _is_eigenvalue(n) and not e <= SMOOTHING_TOLERANCE
    }
    assert not bad, f"{case}: channels beyond {SMOOTHING_TOLERANCE} of their range: {bad}"


def test_eigenvalues_match_exact_eigenvalues_of_vigras_tensors(comparison) -> None:
    case, names, _, exact_errors, _ = comparison
    bad = {
        n: f"{e:.1e}"
        for n, e in zip(names, exact_errors, strict=True)
        if _is_eigenvalue(n) and not e <= SMOOTHING_TOLERANCE
    }
    assert not bad, f"{case}: eigenvalues off vigra's tensors' exact ones: {bad}"


def test_eigenvalues_match_vigra_up_to_its_solvers_error(comparison) -> None:
    case, names, errors, _, vigra_errors = comparison
    bad = {
        n: f"{e:.1e} (vigra's own error {v:.1e})"
        for n, e, v in zip(names, errors, vigra_errors, strict=True)
        if _is_eigenvalue(n) and not e <= max(EIGENVALUE_TOLERANCE, v + SMOOTHING_TOLERANCE)
    }
    assert not bad, f"{case}: eigenvalues beyond {EIGENVALUE_TOLERANCE} of vigra's: {bad}"
