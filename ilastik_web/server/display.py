"""How a layer looks in the viewer: contrast range, shader, segment colours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.server.served_pyramid import is_native

#: ilastik's default label colours, in class order (class 1 first).
CLASS_COLORS = (
    "#ff0000",
    "#00ff00",
    "#ffff00",
    "#0000ff",
    "#ff00ff",
    "#00ffff",
    "#ffa500",
    "#a020f0",
    "#808000",
    "#008080",
)

#: Upper bound (z, y, x) of the central box read to estimate a contrast range.
CONTRAST_SAMPLE_SHAPE = (16, 512, 512)

GRAYSCALE_SHADER = """#uicontrol invlerp normalized
void main() {
  emitGrayscale(normalized());
}
"""

RGB_SHADER = """#uicontrol invlerp normalized
void main() {
  emitRGB(vec3(normalized(getDataValue(0)), normalized(getDataValue(1)),
               normalized(getDataValue(2))));
}
"""


@dataclass(frozen=True)
class LayerDisplay:
    """What the viewer needs to draw a layer, beyond its data.

    Attributes
    ----------
    shader
        GLSL for image layers (None: Neuroglancer's default).
    contrast_range
        (low, high) of the ``normalized`` invlerp control, in data values.
    segment_colors
        Segment id -> ``#rrggbb`` for segmentation layers.
    opacity
        Layer opacity, 0..1.
    visible
        Whether the layer starts visible.
    """

    shader: str | None = None
    contrast_range: tuple[float, float] | None = None
    segment_colors: dict[int, str] = field(default_factory=dict)
    opacity: float | None = None
    visible: bool = True


def class_colors(num_classes: int) -> dict[int, str]:
    """Segment colours for label values 1..num_classes (ilastik's palette, cycled)."""
    return {i + 1: CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(num_classes)}


def contrast_sample(volume: MultiscaleVolume) -> np.ndarray:
    """A cheap central sample (c, z, y, x) of ``volume`` to set the contrast from.

    Reads the coarsest *native* level (computed levels may need the whole volume), at
    most :data:`CONTRAST_SAMPLE_SHAPE` voxels around its centre.
    """
    level = next(lv for lv in reversed(volume.levels) if is_native(lv))
    start = tuple(
        max(0, (s - m) // 2) for s, m in zip(level.shape, CONTRAST_SAMPLE_SHAPE, strict=True)
    )
    stop = tuple(
        min(s, a + m) for s, a, m in zip(level.shape, start, CONTRAST_SAMPLE_SHAPE, strict=True)
    )
    return level.read(Box(start, stop))


def estimate_contrast_range(
    volume: MultiscaleVolume, *, percentiles: Sequence[float] = (0.5, 99.5)
) -> tuple[float, float]:
    """Low and high display values from percentiles of a cheap sample.

    Returns
    -------
    tuple of float
        ``(low, high)`` with ``high > low``; integers for integer data.
    """
    sample = contrast_sample(volume)
    values = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if values.size == 0:
        return (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if sample.dtype.kind in "iub":
        low, high = float(np.floor(low)), float(np.ceil(high))
    if high <= low:
        high = low + 1.0
    return (low, high)


def image_shader(num_channels: int) -> str:
    """Grayscale for one channel (or channel 0 of many), RGB for three."""
    return RGB_SHADER if num_channels == 3 else GRAYSCALE_SHADER
