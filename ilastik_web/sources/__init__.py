"""Data sources opened lazily as multiscale volumes.

:func:`open_source` detects the format of a location and returns a
:class:`~ilastik_web.abc.MultiscaleVolume`. One module per backend: :mod:`.ome_zarr`,
:mod:`.zarr_array` (zarr v2/v3), :mod:`.n5`, :mod:`.precomputed` (all through
tensorstore, locally or over http), :mod:`.hdf5` (h5py), :mod:`.tiff` (tifffile) and
:mod:`.procedural` (the synthetic terabyte volume); :mod:`.array` wraps numpy arrays.
"""

from ilastik_web.sources.array import ArrayVolume
from ilastik_web.sources.dispatch import DEFAULT_CACHE_BYTES, open_source
from ilastik_web.sources.procedural import ProceduralParams, ProceduralVolume

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "ArrayVolume",
    "ProceduralParams",
    "ProceduralVolume",
    "open_source",
]
