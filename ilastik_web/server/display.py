"""How a layer looks in the viewer: contrast range, shader, segment colours."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.damage import read_tolerant
from ilastik_web.server.served_pyramid import is_native

log = logging.getLogger(__name__)

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

#: Channels a multichannel image shows (each with its own colour, range and checkbox).
MAX_SHOWN_CHANNELS = 8

#: Channel colours: two channels as green and magenta (readable by colour-blind users),
#: more as red, green, blue, then the secondaries.
TWO_CHANNEL_COLORS = ("#00ff00", "#ff00ff")
CHANNEL_COLORS = ("#ff0000", "#00ff00", "#0000ff", "#ffff00", "#ff00ff", "#00ffff",
                  "#ffffff", "#ff8000")

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
    shader_controls
        Further ``shaderControls`` entries (per-channel ranges, colours, checkboxes).
    segment_colors
        Segment id -> ``#rrggbb`` for segmentation layers.
    opacity
        Layer opacity, 0..1.
    visible
        Whether the layer starts visible.
    on_top
        Drawn above the other layers (training labels over predictions), also when
        layers are added later.
    """

    shader: str | None = None
    contrast_range: tuple[float, float] | None = None
    shader_controls: dict[str, Any] = field(default_factory=dict)
    segment_colors: dict[int, str] = field(default_factory=dict)
    opacity: float | None = None
    visible: bool = True
    on_top: bool = False


def class_colors(num_classes: int) -> dict[int, str]:
    """Segment colours for label values 1..num_classes (ilastik's palette, cycled)."""
    return {i + 1: CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(num_classes)}


def contrast_sample(volume: MultiscaleVolume) -> tuple[np.ndarray, np.ndarray]:
    """A cheap central sample (c, z, y, x) of ``volume`` to set the contrast from, and
    the (z, y, x) mask of the voxels that could be read.

    Reads the coarsest *native* level (computed levels may need the whole volume), at
    most :data:`CONTRAST_SAMPLE_SHAPE` voxels around its centre. Unreadable chunks are
    left out (one log line), so a corrupt chunk does not stop a source from opening.
    """
    level = next(lv for lv in reversed(volume.levels) if is_native(lv))
    start = tuple(
        max(0, (s - m) // 2) for s, m in zip(level.shape, CONTRAST_SAMPLE_SHAPE, strict=True)
    )
    stop = tuple(
        min(s, a + m) for s, a, m in zip(level.shape, start, CONTRAST_SAMPLE_SHAPE, strict=True)
    )
    box = Box(start, stop)
    result = read_tolerant(level, box)
    if not result.complete:
        log.warning("%s: %d unreadable chunk(s) left out of the contrast estimate: %s",
                    volume.name, len(result.filled), result.errors[0])
    return result.data, result.valid_mask(box)


def _percentile_range(
    values: np.ndarray, dtype: np.dtype, percentiles: Sequence[float]
) -> tuple[float, float]:
    if dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if dtype.kind in "iub":
        low, high = float(np.floor(low)), float(np.ceil(high))
    if high <= low:
        high = low + 1.0
    return (low, high)


def estimate_channel_ranges(
    volume: MultiscaleVolume, *, percentiles: Sequence[float] = (0.5, 99.5)
) -> list[tuple[float, float]]:
    """Per channel, low and high display values from percentiles of a cheap sample.

    Returns
    -------
    list of tuple of float
        One ``(low, high)`` per channel with ``high > low``; integers for integer data.
    """
    sample, valid = contrast_sample(volume)
    return [_percentile_range(channel[valid], sample.dtype, percentiles) for channel in sample]


def estimate_contrast_range(
    volume: MultiscaleVolume, *, percentiles: Sequence[float] = (0.5, 99.5)
) -> tuple[float, float]:
    """Low and high display values from percentiles of a cheap sample, all channels
    together (see :func:`estimate_channel_ranges` for one range per channel)."""
    sample, valid = contrast_sample(volume)
    return _percentile_range(sample[:, valid], sample.dtype, percentiles)


def channel_colors(num_channels: int) -> list[str]:
    palette = TWO_CHANNEL_COLORS if num_channels == 2 else CHANNEL_COLORS
    return [palette[i % len(palette)] for i in range(num_channels)]


def channels_shader(num_channels: int) -> str:
    """Additive composite: channel ``i`` through its own range ``contrast<i>``, coloured
    ``color<i>``, shown while the checkbox ``show<i>`` is on (at most
    :data:`MAX_SHOWN_CHANNELS`)."""
    shown = min(num_channels, MAX_SHOWN_CHANNELS)
    lines = []
    for i in range(shown):
        lines += [f"#uicontrol bool show{i} checkbox(default=true)",
                  f"#uicontrol vec3 color{i} color",
                  f"#uicontrol invlerp contrast{i}(channel={i})"]
    body = "\n".join(f"  if (show{i}) rgb += color{i} * clamp(contrast{i}(), 0.0, 1.0);"
                      for i in range(shown))
    main = f"void main() {{\n  vec3 rgb = vec3(0.0);\n{body}\n  emitRGB(min(rgb, vec3(1.0)));\n}}\n"
    return "\n".join(lines) + "\n" + main


def is_rgb(volume: MultiscaleVolume) -> bool:
    """Three 8-bit channels: shown as one colour image, each channel 0..255."""
    base = volume.base
    return base.num_channels == 3 and base.dtype == np.uint8


def image_display(volume: MultiscaleVolume) -> LayerDisplay:
    """The default display of an image: grayscale, RGB, or one colour and contrast range
    per channel, with ranges from percentiles of a cheap sample."""
    channels = volume.base.num_channels
    if channels == 1:
        return LayerDisplay(shader=GRAYSCALE_SHADER,
                            contrast_range=estimate_contrast_range(volume))
    if is_rgb(volume):
        return LayerDisplay(shader=RGB_SHADER, contrast_range=(0.0, 255.0))
    ranges = estimate_channel_ranges(volume)[:MAX_SHOWN_CHANNELS]
    controls: dict[str, Any] = {}
    for i, (color, (low, high)) in enumerate(zip(channel_colors(len(ranges)), ranges,
                                                 strict=True)):
        controls[f"show{i}"] = True
        controls[f"color{i}"] = color
        controls[f"contrast{i}"] = {"range": [low, high], "channel": [i]}
    return LayerDisplay(shader=channels_shader(channels), shader_controls=controls)
