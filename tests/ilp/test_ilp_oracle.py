"""Desktop ilastik is the oracle: its stored forests on our features give its predictions.

For each of ilastik's five Pixel Classification API test projects, the forest ilastik
trained and saved, decoded without vigra, is applied to ``filters.compute_features`` of
the project's selection; the result must meet ilastik's own test tolerance against the
probabilities desktop ilastik computed (``res-*.npy``).
"""

from __future__ import annotations

import numpy as np
import pytest
from ilp_fixtures import API_PROJECTS, extract_api_projects, within_ilastik_tolerance

import filters
from ilastik_web.abc import Box
from ilastik_web.classify.vigra_forest import VigraForestClassifier
from ilastik_web.ilp import import_ilp, read_ilp
from ilastik_web.ilp.data import load_lane, to_czyx


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    return extract_api_projects(tmp_path_factory.mktemp("ilastik"))


@pytest.mark.parametrize("project", sorted(API_PROJECTS))
def test_ilastiks_forest_on_our_features_gives_ilastiks_probabilities(api, project: str) -> None:
    data, reference = API_PROJECTS[project]
    ilp = read_ilp(api / project)
    array, axes = load_lane(ilp, ilp.lanes[0], api / data)
    volume = to_czyx(array, axes).astype(np.float32)
    ndim = 2 if volume.shape[1] == 1 else 3
    image = volume[:, 0] if ndim == 2 else volume
    features = filters.compute_features(image, ilp.selection, ndim=ndim)
    names = filters.channel_names(ilp.selection, ndim=ndim, input_channels=image.shape[0])
    # our channel names are ilastik's: the stored forest's columns are found by name
    assert sorted(names) == sorted(ilp.feature_names)
    classifier = VigraForestClassifier(
        ilp.forest, range(1, len(ilp.class_names) + 1), names,
        [names.index(n) for n in ilp.feature_names],
    )
    ours = np.moveaxis(classifier.predict_proba(features), 0, -1)
    theirs = np.load(api / reference).reshape(ours.shape)
    ok, account = within_ilastik_tolerance(ours, theirs)
    assert ok, f"{project}: {account}"
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.999


@pytest.mark.parametrize("project", ["PixelClass3D_2D_3D_feature_mix.ilp", "PixelClass.ilp"])
def test_imported_project_predicts_what_ilastik_predicted(api, tmp_path, project: str) -> None:
    data, reference = API_PROJECTS[project]
    imported = import_ilp(api / project, tmp_path / "project", data=api / data)
    try:
        assert imported.generation == 1  # ilastik's forest serves until the user retrains
        ours = imported.predict(Box.from_shape(imported.source.base.shape))
        theirs = np.load(api / reference)
        theirs = np.moveaxis(theirs.reshape(*imported.source.base.shape[-ours.ndim + 1:],
                                            -1), -1, 0).reshape(ours.shape)
        ok, account = within_ilastik_tolerance(ours, theirs)
        assert ok, f"{project} imported: {account}"
    finally:
        imported.close()


def test_vigras_structure_tensor_order_does_not_reproduce_ilastik(api) -> None:
    """Negative control: the structure tensor in vigra's reading of lazyflow's call
    (gradient at s, smoothing at s/2) misses ilastik's predictions, so the oracle test
    above can tell the two orders apart."""
    ilp = read_ilp(api / "PixelClass.ilp")
    array, axes = load_lane(ilp, ilp.lanes[0], api / "Data_1channel.png")
    image = to_czyx(array, axes)[:, 0].astype(np.float32)
    names = filters.channel_names(ilp.selection, ndim=2)
    classifier = VigraForestClassifier(ilp.forest, (1, 2), names,
                                       [names.index(n) for n in ilp.feature_names])
    theirs = np.load(api / "res-Data_1channel_pc1xyc.npy")
    features = filters.compute_features(image, ilp.selection, ndim=2)
    for spec in ilp.selection:
        if spec.feature_id == "StructureTensorEigenvalues":
            first = names.index(f"{spec.name()} [0]")
            features[first : first + 2] = _vigra_order_tensor_eigenvalues(image[0], spec.sigma)
    ours = np.moveaxis(classifier.predict_proba(features), 0, -1)
    ok, account = within_ilastik_tolerance(ours, theirs)
    assert not ok, account


def _vigra_order_tensor_eigenvalues(plane: np.ndarray, sigma: float) -> np.ndarray:
    """ilastik's presmoothing, then gradient at s and smoothing at s/2, in float64."""
    from scipy import ndimage

    from filters.kernels import FEATURE_WINDOW, PRESMOOTH_WINDOW, gaussian_kernel

    def separable(values, kernel_y, kernel_x):
        # correlation kernels; scipy's mode="mirror" is vigra's border
        rows = ndimage.correlate1d(values, kernel_y, axis=0, mode="mirror")
        return ndimage.correlate1d(rows, kernel_x, axis=1, mode="mirror")

    pre = gaussian_kernel(np.sqrt(sigma**2 - 1) if sigma > 1 else sigma, 0, PRESMOOTH_WINDOW)
    s = min(sigma, 1.0)
    smooth, first = (gaussian_kernel(s, k, FEATURE_WINDOW) for k in (0, 1))
    outer = gaussian_kernel(0.5 * s, 0, FEATURE_WINDOW)
    smoothed = separable(plane.astype(np.float64), pre, pre)
    gy, gx = separable(smoothed, first, smooth), separable(smoothed, smooth, first)
    txx, txy, tyy = (separable(p, outer, outer) for p in (gx * gx, gx * gy, gy * gy))
    mean, radius = (txx + tyy) / 2, np.sqrt(((txx - tyy) / 2) ** 2 + txy**2)
    return np.stack([mean + radius, mean - radius]).astype(np.float32)
