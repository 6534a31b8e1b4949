"""ilastik's pixel-feature bank: numerically faithful, blockwise, on CPU (numba) or CUDA (torch).

Pure numerics: arrays in, arrays out. See :func:`compute_features`.
"""

from filters.backends import release_memory
from filters.compute import compute_features, required_halo
from filters.spec import (
    DEFAULT_SCALES,
    FEATURE_IDS,
    FeatureSpec,
    channel_names,
    default_selection,
    normalize_selection,
    num_channels,
)

__all__ = [
    "DEFAULT_SCALES",
    "FEATURE_IDS",
    "FeatureSpec",
    "channel_names",
    "compute_features",
    "default_selection",
    "normalize_selection",
    "num_channels",
    "release_memory",
    "required_halo",
]
