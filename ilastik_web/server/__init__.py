"""The web layer: an aiohttp app factory over the Python API.

Every route (API, precomputed chunks, viewer protocol), the viewer sessions and state,
and the served-layer adapters that put lazy volumes on precomputed URLs live here. Import
:func:`ilastik_web.server.app.create_app`. Nothing below this package imports it.
"""
