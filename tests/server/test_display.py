"""Default displays: grayscale, RGB as RGB, and a colour and range per channel."""

from __future__ import annotations

import numpy as np

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.server.display import (
    GRAYSCALE_SHADER,
    RGB_SHADER,
    channels_shader,
    image_display,
)
from ilastik_web.sources.array import ArrayVolume


def _volume(data):
    return MultiscaleVolume("v", [ArrayVolume(data, (1.0, 1.0, 1.0), key=f"d{data.shape}")])


def test_one_channel_is_grayscale_with_percentiles():
    data = np.arange(4 * 32 * 32, dtype=np.uint16).reshape(1, 4, 32, 32)
    display = image_display(_volume(data))
    assert display.shader == GRAYSCALE_SHADER
    low, high = display.contrast_range
    assert 0 <= low < 50 and 4000 < high <= 4096


def test_rgb_uint8_is_shown_as_rgb():
    data = np.random.default_rng(0).integers(0, 255, (3, 2, 16, 16), dtype=np.uint8)
    display = image_display(_volume(data))
    assert display.shader == RGB_SHADER and display.contrast_range == (0.0, 255.0)


def test_each_channel_gets_its_own_range_and_colour():
    rng = np.random.default_rng(1)
    data = np.stack([rng.integers(0, 100, (2, 32, 32)),
                     rng.integers(10000, 60000, (2, 32, 32))]).astype(np.uint16)
    display = image_display(_volume(data))
    assert display.shader == channels_shader(2)
    c = display.shader_controls
    assert c["color0"] != c["color1"] and c["show0"] and c["show1"]
    assert c["contrast0"]["range"][1] <= 100 and c["contrast1"]["range"][0] >= 10000
    assert c["contrast1"]["channel"] == [1]
    assert "#uicontrol invlerp contrast1(channel=1)" in display.shader
