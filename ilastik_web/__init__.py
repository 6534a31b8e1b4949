"""ilastik-web: interactive pixel classification for volumes larger than memory.

The package is a Python API first (sources, lazy volumes, projects); the HTTP server in
:mod:`ilastik_web.server` is a thin layer over it.
"""

__version__ = "0.1.0"
