"""Neuroglancer integration that knows nothing of HTTP serving.

The precomputed protocol (:mod:`neuroglancer_ext.precomputed`: info, chunk names,
encoding), the offline stock client (:mod:`neuroglancer_ext.static`) and the viewer
extension scripts (``static/``, installed by :mod:`neuroglancer_ext.extension`). The
routes, viewer sessions and served-layer adapters live in the web package,
:mod:`ilastik_web.server`.
"""
