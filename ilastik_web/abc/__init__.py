"""Contracts the rest of the package builds on: geometry and lazy volumes."""

from ilastik_web.abc.box import Box
from ilastik_web.abc.volume import LazyVolume, MultiscaleVolume

__all__ = ["Box", "LazyVolume", "MultiscaleVolume"]
