"""Analytic checks, backend agreement and input validation (no vigra needed)."""

from __future__ import annotations

import numpy as np
import pytest
from feature_images import structured_image

import filters
from filters.backends import NumbaBackend, TorchBackend, get_backend


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return [g.astype(np.float64) for g in np.meshgrid(*map(np.arange, shape), indexing="ij")]


def _interior(array: np.ndarray, margin: int) -> np.ndarray:
    return array[(slice(None), *(slice(margin, n - margin) for n in array.shape[1:]))]


@pytest.mark.parametrize("sigma", [0.7, 1.0, 3.5])
def test_features_of_a_quadratic_are_exact_inside(sigma: float) -> None:
    z, y, x = _grid((30, 31, 32))
    a, b, c = 0.5, -0.25, 0.125
    image = (a * (z - 15) ** 2 + b * (y - 15) ** 2 + c * (x - 16) ** 2)[None]
    selection = [
        ("LaplacianOfGaussian", sigma),
        ("HessianOfGaussianEigenvalues", sigma),
    ]
    features = filters.compute_features(image, selection, ndim=3)
    inside = _interior(features, filters.required_halo(selection, ndim=3)[0])
    assert np.allclose(inside[0], 2 * (a + b + c), atol=1e-3)
    for k, expected in enumerate(sorted([2 * a, 2 * b, 2 * c], reverse=True)):
        assert np.allclose(inside[1 + k], expected, atol=1e-3)


def test_gradient_and_structure_tensor_of_a_ramp() -> None:
    y, x = _grid((40, 41))
    image = (3.0 * x - 4.0 * y)[None]
    selection = [
        ("GaussianSmoothing", 1.6),
        ("GaussianGradientMagnitude", 1.6),
        ("DifferenceOfGaussians", 1.6),
        ("StructureTensorEigenvalues", 1.6),
    ]
    features = filters.compute_features(image, selection, ndim=2)
    margin = filters.required_halo(selection, ndim=2)[0]
    inside = _interior(features, margin)
    assert np.allclose(inside[0], _interior(image, margin)[0], atol=1e-3)
    assert np.allclose(inside[1], 5.0, rtol=1e-5)
    assert np.allclose(inside[2], 0.0, atol=1e-3)
    assert np.allclose(inside[3], 25.0, rtol=1e-4)
    assert np.allclose(inside[4], 0.0, atol=1e-3)


def test_anisotropic_voxels_give_physical_derivatives() -> None:
    z, y, x = _grid((24, 40, 40))
    physical_z = 2.0 * z  # z voxels are twice as long
    image = ((physical_z - 24) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)[None]
    features = filters.compute_features(
        image, [("HessianOfGaussianEigenvalues", 2.0)], ndim=3, voxel_size=(8.0, 4.0, 4.0)
    )
    halo = filters.required_halo(
        [("HessianOfGaussianEigenvalues", 2.0)], ndim=3, voxel_size=(8.0, 4.0, 4.0)
    )
    inside = features[:, halo[0] : -halo[0], halo[1] : -halo[1], halo[2] : -halo[2]]
    assert np.allclose(inside, 2.0, atol=1e-3)


def test_isotropic_voxel_size_is_ilastiks_default() -> None:
    image = np.random.default_rng(0).random((1, 20, 21, 22), dtype=np.float32)
    plain = filters.compute_features(image, "all", ndim=3)
    scaled = filters.compute_features(image, "all", ndim=3, voxel_size=(5.0, 5.0, 5.0))
    assert np.array_equal(plain, scaled)


def test_in_2d_equals_2d_per_slice() -> None:
    image = np.random.default_rng(1).random((2, 5, 30, 31), dtype=np.float32)
    selection = [(feature, 1.6, True) for feature in filters.FEATURE_IDS]
    volume = filters.compute_features(image, selection, ndim=3)
    assert volume.shape == (2 * 8, 5, 30, 31)
    planar = [(feature, 1.6) for feature in filters.FEATURE_IDS]
    for z in range(5):
        expected = filters.compute_features(image[:, z], planar, ndim=2)
        assert np.allclose(volume[:, z], expected, rtol=1e-6, atol=1e-6)


def test_tiny_images_mirror_like_scipy() -> None:
    image = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    features = filters.compute_features(image, [("GaussianSmoothing", 10.0)], ndim=3)
    assert features.shape == (1, 1, 2, 3) and np.isfinite(features).all()
    # mirroring a 2-voxel axis makes it periodic: its mean is preserved exactly
    assert np.allclose(features.mean(), image.mean(), rtol=1e-5)


@pytest.mark.parametrize("backend", [NumbaBackend(), TorchBackend("cpu")], ids=["numba", "torch"])
@pytest.mark.parametrize("size", [2, 3])
def test_closed_form_eigenvalues_match_lapack(backend, size: int) -> None:
    rng = np.random.default_rng(size)
    matrices = rng.standard_normal((500, size, size))
    matrices = matrices + np.swapaxes(matrices, 1, 2)
    matrices[:50] = np.diag(rng.standard_normal(size))  # degenerate: diagonal, then repeated
    matrices[50:100] = np.eye(size) * 2.0
    matrices[100:110] = 0.0
    rows, cols = np.triu_indices(size)
    components = [
        backend.from_numpy(matrices[:, i, j].reshape(5, 10, 10).astype(np.float32))
        for i, j in zip(rows, cols, strict=True)
    ]
    values = backend.to_numpy(backend.eigenvalues(components)).reshape(size, 500)
    expected = np.linalg.eigvalsh(matrices.astype(np.float32).astype(np.float64))[:, ::-1].T
    assert np.allclose(values, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("ndim", [2, 3])
def test_torch_backend_equals_numba_backend(ndim: int) -> None:
    image = structured_image((21, 26, 23)[-ndim:], seed=ndim)
    selection = "all" if ndim == 2 else [s for s in filters.default_selection() if s.sigma < 5]
    numba_result = filters.compute_features(image, selection, ndim=ndim, backend="numba")
    torch_result = filters.compute_features(image, selection, ndim=ndim, backend="torch")
    axes = tuple(range(1, ndim + 1))
    spread = numba_result.max(axis=axes) - numba_result.min(axis=axes)
    error = np.abs(torch_result - numba_result).max(axis=axes) / spread
    # float32 sums in another order: at σ 10 on a 21×23 image DoG's range is a thousandth of
    # the input's, which magnifies round-off (the same bound as against vigra)
    assert error.max() <= 1e-3, error


def test_default_device_is_cpu_without_cuda() -> None:
    torch = pytest.importorskip("torch")
    backend = get_backend()
    assert backend.name == ("torch" if torch.cuda.is_available() else "numba")


def test_out_is_filled_and_returned() -> None:
    image = np.random.default_rng(2).random((1, 12, 13), dtype=np.float32)
    out = np.full((49, 12, 13), np.nan, dtype=np.float32)
    result = filters.compute_features(image, "all", ndim=2, out=out)
    assert result is out and np.isfinite(out).all()


def test_integer_input_is_computed_in_float32() -> None:
    image = np.random.default_rng(3).integers(0, 255, (1, 12, 13), dtype=np.uint8)
    result = filters.compute_features(image, [("GaussianSmoothing", 0.7)], ndim=2)
    expected = filters.compute_features(
        image.astype(np.float32), [("GaussianSmoothing", 0.7)], ndim=2
    )
    assert result.dtype == np.float32 and np.array_equal(result, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": np.zeros((8, 8)), "ndim": 2}, "image must be \\(channels, \\*spatial\\)"),
        ({"image": np.zeros((1, 8, 8)), "ndim": 4}, "ndim must be 2 or 3"),
        ({"image": np.zeros((1, 0, 8)), "ndim": 2}, "image is empty"),
        ({"image": np.array([[["a"]]]), "ndim": 2}, "image must be numeric"),
        ({"image": np.zeros((1, 8, 8)), "ndim": 2, "voxel_size": (1, 0)}, "voxel_size"),
        ({"image": np.zeros((1, 8, 8)), "ndim": 2, "voxel_size": (1, 1, 1)}, "voxel_size"),
        ({"image": np.zeros((1, 8, 8)), "ndim": 2, "device": "tpu"}, "device must be"),
        ({"image": np.zeros((1, 8, 8)), "ndim": 2, "backend": "vigra"}, "backend must be"),
        ({"image": np.zeros((1, 8, 8)), "ndim": 2, "tile_shape": (0, 4)}, "tile_shape"),
        ({"image": np.zeros((1, 8, 8)), "ndim": 2, "out": np.zeros((1, 8, 8))}, "out must be"),
    ],
)
def test_bad_arguments_are_one_line_value_errors(kwargs: dict, message: str) -> None:
    kwargs.setdefault("selection", [("GaussianSmoothing", 1.0)])
    with pytest.raises(ValueError, match=message) as raised:
        filters.compute_features(**kwargs)
    assert "\n" not in str(raised.value)


def test_concurrent_scale_groups_equal_sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    from filters import compute

    image = structured_image((64, 64, 64), seed=5)
    selection = [s for s in filters.default_selection() if s.sigma in (0.7, 1.6, 3.5)]
    assert image[0].size >= compute.TASK_MIN_VOXELS
    concurrent = filters.compute_features(image, selection, ndim=3)
    monkeypatch.setattr(compute, "TASK_MIN_VOXELS", 1 << 40)
    sequential = filters.compute_features(image, selection, ndim=3)
    assert np.array_equal(concurrent, sequential)
