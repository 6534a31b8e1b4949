"""Segment Anything (SAM / micro-sam) prompts: click an object, get its mask, in 2D and 3D.

Optional: needs the ``sam`` extra (torch, torchvision, segment-anything-py, scikit-image,
xxhash, and micro-sam's runtime dependencies) and micro-sam.
Nothing here downloads weights; models come from configured checkpoint files.
"""

from ilastik_web.sam.geometry import SLICE_PLANES, SlicePlane, SliceRef
from ilastik_web.sam.models import ModelRegistry, ModelSpec, choose_device, load_model
from ilastik_web.sam.service import SamService, SamSettings

__all__ = [
    "SLICE_PLANES",
    "ModelRegistry",
    "ModelSpec",
    "SamService",
    "SamSettings",
    "SlicePlane",
    "SliceRef",
    "choose_device",
    "load_model",
]
