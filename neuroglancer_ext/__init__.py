"""Neuroglancer integration: precomputed serving of lazy volumes and the offline viewer.

Knows lazy volumes (:mod:`ilastik_web.abc`), not how they compute.
"""
