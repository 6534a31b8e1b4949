"""The HTTP server: an aiohttp app factory over the Python API.

Import :func:`ilastik_web.server.app.create_app`; this package's modules are small and
grouped by concern (routing, auth, errors, API routes, OpenAPI).
"""
