"""Contracts the rest of the package builds on: geometry and lazy volumes."""

from ilastik_web.abc.box import Box
from ilastik_web.abc.volume import FixedVolume, LazyVolume, MultiscaleVolume, VolumeMetadata

__all__ = ["Box", "FixedVolume", "LazyVolume", "MultiscaleVolume", "VolumeMetadata"]
