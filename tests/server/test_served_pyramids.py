"""Serving pyramids: native levels kept, computed levels added or redone per layer kind."""

from __future__ import annotations

import numpy as np

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.pyramid import build_pyramid
from ilastik_web.server.served_pyramid import complete_pyramid, is_native
from ilastik_web.sources.array import ArrayVolume


def test_short_native_pyramid_is_extended(rng):
    data = rng.integers(0, 255, size=(1, 3, 600, 500), dtype=np.uint8)
    native = MultiscaleVolume("v", [ArrayVolume(data, (40, 4, 4))])
    full = complete_pyramid(native, cache=ArrayCache(2**24))
    assert full.levels[0] is native.levels[0]
    assert [lv.shape for lv in full.levels] == [
        (3, 600, 500), (3, 300, 250), (3, 150, 125), (3, 75, 63)
    ]
    assert [is_native(lv) for lv in full.levels] == [True, False, False, False]


def test_small_or_complete_pyramids_are_unchanged(rng):
    small = MultiscaleVolume("s", [ArrayVolume(np.zeros((1, 2, 100, 100), np.uint8))])
    assert complete_pyramid(small) is small
    data = rng.integers(0, 255, size=(1, 2, 600, 500), dtype=np.uint8)
    built = build_pyramid(ArrayVolume(data), cache=ArrayCache(2**24), name="b")
    assert complete_pyramid(built, kind="image") is built


def test_label_layers_replace_mean_levels_by_mode(rng):
    labels = rng.integers(0, 3, size=(1, 2, 300, 300), dtype=np.uint8)
    built = build_pyramid(ArrayVolume(labels), cache=ArrayCache(2**24), name="l")
    served = complete_pyramid(built, kind="segmentation", cache=ArrayCache(2**24))
    assert served.levels[0] is built.levels[0]
    assert len(served) > 1
    assert all(lv.method == "mode" for lv in served.levels[1:])
