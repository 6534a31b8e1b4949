"""Training labels: brush strokes rasterised into a sparse, crash-safe block store."""

from ilastik_web.labels.rasterize import PLANES, Plane, Stroke, rasterize
from ilastik_web.labels.store import EditResult, LabelSnapshot, LabelStore
from ilastik_web.labels.volume import LabelVolume

__all__ = [
    "PLANES",
    "EditResult",
    "LabelSnapshot",
    "LabelStore",
    "LabelVolume",
    "Plane",
    "Stroke",
    "rasterize",
]
