"""Test images with structure at every scale, so large-σ channels have a real range."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def structured_image(shape: tuple[int, ...], seed: int = 0, channels: int = 1) -> np.ndarray:
    """float32 (channels, *shape) in about [0, 265]: smoothed noise at σ 1, 3 and 8 plus
    fine noise, like a microscopy image with blobs of several sizes."""
    rng = np.random.default_rng(seed)
    planes = []
    for _ in range(channels):
        image = np.zeros(shape)
        for sigma in (1.0, 3.0, 8.0):
            noise = rng.standard_normal(shape)
            image += ndimage.gaussian_filter(noise, sigma, mode="mirror") * sigma
        image = (image - image.min()) / (image.max() - image.min()) * 255
        planes.append(image + rng.random(shape) * 10)
    return np.stack(planes).astype(np.float32)
