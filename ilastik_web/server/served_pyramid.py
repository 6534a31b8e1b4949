"""Make a served volume's pyramid complete and right for its layer kind.

Neuroglancer always fetches the coarse scales, so every served volume needs levels down
to a small size. Native levels are kept. Computed levels
(:class:`ilastik_web.pyramid.DownsampledVolume`, block-wise and cached) are appended
where the native ones stop too early, and a label layer gets its computed levels by
majority vote ("mode") rather than the mean sources build by default, which would
invent label values that exist nowhere.
"""

from __future__ import annotations

from typing import Literal

from ilastik_web.abc import LazyVolume, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.pyramid import DownsampledVolume, next_factors

#: Add levels while some axis of the coarsest level is longer than this.
DEFAULT_COARSEST_SIZE = 128
#: Cache for computed levels of a layer created without one.
FALLBACK_CACHE_BYTES = 64 * 2**20

LayerKind = Literal["image", "segmentation"]


def method_for(kind: LayerKind) -> Literal["mean", "mode"]:
    """Downsampling method for a layer kind: mean for images, mode for labels."""
    return "mode" if kind == "segmentation" else "mean"


def is_native(level: LazyVolume) -> bool:
    """True for a level read from the source, False for a computed one."""
    return not isinstance(level, DownsampledVolume)


def complete_pyramid(
    volume: MultiscaleVolume,
    *,
    kind: LayerKind = "image",
    cache: ArrayCache | None = None,
    coarsest_size: int = DEFAULT_COARSEST_SIZE,
    max_levels: int = 16,
) -> MultiscaleVolume:
    """``volume`` with computed levels appended (or redone) for serving as ``kind``.

    Parameters
    ----------
    volume
        Levels finest first; native levels are kept as they are.
    kind
        ``"segmentation"`` recomputes mean-downsampled levels by mode.
    cache
        Cache for the blocks of levels computed here.
    coarsest_size
        Add levels while some axis of the coarsest level is longer than this.
    max_levels
        Upper bound on the number of levels.

    Returns
    -------
    MultiscaleVolume
        ``volume`` itself when nothing changes, else a new pyramid sharing its levels.
    """
    method = method_for(kind)
    levels: list[LazyVolume] = list(volume.levels)
    first_computed = next((i for i, lv in enumerate(levels) if not is_native(lv)), len(levels))
    if any(lv.method != method for lv in levels[first_computed:]):  # type: ignore[attr-defined]
        levels = levels[:first_computed]
    cache = cache or ArrayCache(FALLBACK_CACHE_BYTES)
    while len(levels) < max_levels:
        top = levels[-1]
        if max(top.shape) <= coarsest_size:
            break
        factors = next_factors(top.shape, top.voxel_size)
        if factors == (1, 1, 1):
            break
        fz, fy, fx = factors
        levels.append(
            DownsampledVolume(
                top, factors, method=method, cache=cache,
                key=f"{top.key}/served-{method}-{fz}x{fy}x{fx}",
            )
        )
    if len(levels) == len(volume.levels) and all(
        a is b for a, b in zip(levels, volume.levels, strict=True)
    ):
        return volume
    return MultiscaleVolume(volume.name, levels)
