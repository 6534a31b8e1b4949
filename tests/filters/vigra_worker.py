"""Compute ilastik's feature scheme with vigra; run by Debian's /usr/bin/python3 only.

Usage: ``vigra_worker.py INPUT.npy SPEC.json OUTPUT.npy``. INPUT is float32
(input_channels, *spatial); SPEC is ``{"ndim": 2|3, "features": [[id, sigma, in_2d], ...]}``
already in output order; ``"exact_eigenvalues": true`` replaces vigra's float32 eigensolver
by float64 LAPACK on vigra's tensors. Follows lazyflow's OpPixelFeaturesPresmoothed without
fastfilters: presmooth with sqrt(σ²-1) (σ > 1) or σ, window 3.5, then the vigra filter at
min(σ, 1) with window 2; DoG G(s) - G(0.66 s); in_2d runs per z-slice.

Structure tensor: vigra's ``structureTensor(image, 0.5 s, s)`` (gradient at s/2, smoothing at
s), which is what desktop ilastik computes through fastfilters (its binding swaps the two
scales lazyflow passes). vigra's reading of lazyflow's own call, ``(s, 0.5 s)``, differs from
desktop ilastik, which is the reference.
"""

import json
import math
import sys

import numpy as np
import vigra


def feature(image, feature_id, s):
    f = vigra.filters
    if feature_id == "GaussianSmoothing":
        out = f.gaussianSmoothing(image, s, window_size=2.0)
    elif feature_id == "LaplacianOfGaussian":
        out = f.laplacianOfGaussian(image, s, window_size=2.0)
    elif feature_id == "GaussianGradientMagnitude":
        out = f.gaussianGradientMagnitude(image, s, window_size=2.0)
    elif feature_id == "DifferenceOfGaussians":
        out = f.gaussianSmoothing(image, s, window_size=2.0) - f.gaussianSmoothing(
            image, s * 0.66, window_size=2.0
        )
    elif feature_id == "StructureTensorEigenvalues":
        out = f.structureTensorEigenvalues(image, s * 0.5, s, window_size=2.0)
    elif feature_id == "HessianOfGaussianEigenvalues":
        out = f.hessianOfGaussianEigenvalues(image, s, window_size=2.0)
    else:
        raise ValueError(feature_id)
    out = np.asarray(out, dtype=np.float32)
    if out.ndim == image.ndim:
        out = out[..., None]
    return np.moveaxis(out, -1, 0)  # (k, *spatial)


def exact_eigenvalues(image, feature_id, s):
    """Eigenvalues in float64 LAPACK of vigra's own tensor (isolates vigra's float32 solver)."""
    f = vigra.filters
    if feature_id == "StructureTensorEigenvalues":
        tensor = f.structureTensor(image, s * 0.5, s, window_size=2.0)
    else:
        tensor = f.hessianOfGaussian(image, s, window_size=2.0)
    tensor = np.asarray(tensor, dtype=np.float64)
    n = image.ndim
    rows, cols = np.triu_indices(n)
    matrices = np.empty(tensor.shape[:-1] + (n, n))
    for k, (i, j) in enumerate(zip(rows, cols, strict=True)):
        matrices[..., i, j] = tensor[..., k]
        matrices[..., j, i] = tensor[..., k]
    values = np.linalg.eigvalsh(matrices)[..., ::-1]
    return np.moveaxis(values, -1, 0).astype(np.float32)


def ilastik_feature(channel, feature_id, sigma, exact=False):
    axes = "zyx"[-channel.ndim :]
    image = vigra.taggedView(np.ascontiguousarray(channel, dtype=np.float32), axes)
    pre = math.sqrt(sigma**2 - 1.0) if sigma > 1.0 else sigma
    smoothed = vigra.filters.gaussianSmoothing(image, pre, window_size=3.5)
    smoothed = vigra.taggedView(np.asarray(smoothed, dtype=np.float32), axes)
    if exact and feature_id in ("StructureTensorEigenvalues", "HessianOfGaussianEigenvalues"):
        return exact_eigenvalues(smoothed, feature_id, min(sigma, 1.0))
    return feature(smoothed, feature_id, min(sigma, 1.0))


def main():
    source, spec_path, target = sys.argv[1:4]
    image = np.load(source)
    with open(spec_path) as f:
        spec = json.load(f)
    ndim = spec["ndim"]
    exact = spec.get("exact_eigenvalues", False)
    blocks = []
    for feature_id, sigma, in_2d in spec["features"]:
        for channel in image:
            if ndim == 3 and in_2d:
                slices = [ilastik_feature(plane, feature_id, sigma, exact) for plane in channel]
                blocks.append(np.stack(slices, axis=1))
            else:
                blocks.append(ilastik_feature(channel, feature_id, sigma, exact))
    np.save(target, np.concatenate(blocks, axis=0).astype(np.float32))


if __name__ == "__main__":
    main()
