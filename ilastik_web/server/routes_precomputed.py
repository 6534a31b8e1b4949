"""HTTP routes serving every registered layer as a Neuroglancer precomputed volume.

``GET /precomputed/{layer_id}/{version}/info`` and
``GET /precomputed/{layer_id}/{version}/{scale_key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}``.

Chunks are read and encoded in the worker pool: the finest level in the chunks lane,
coarser levels in the background lane (below training); when the client
disconnects, aiohttp cancels the handler (the app runs with ``handler_cancellation=True``)
and a read still waiting in the queue is dropped, one already running stops at its next
check. A chunk of a layer version superseded while it waited is dropped too (410).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Executor

import numpy as np
from aiohttp import web

from ilastik_web.cache import ArrayCache
from ilastik_web.cancel import Cancelled, CancelToken, cancellable
from ilastik_web.damage import DamageLog
from ilastik_web.errors import GoneError
from ilastik_web.resources import Lane
from ilastik_web.server.layers import LayerRegistry
from ilastik_web.server.routing import Param, Route
from neuroglancer_ext import precomputed

IMMUTABLE = "public, max-age=31536000, immutable"

#: Header on a chunk that is (partly) a fill because stored data could not be read;
#: its value names the source, the storage chunks and the reason.
FILL_HEADER = "X-Ilastik-Web-Fill"

_LAYER_PARAMS = (
    Param("layer_id", description="Layer id, as listed by /api/sources"),
    Param("version", description="Layer version; chunks under a version never change"),
)


class _Filled(Exception):
    """A chunk body with fills where the stored data could not be read."""

    def __init__(self, body: bytes, failures: tuple):
        super().__init__("chunk partly filled")
        self.body = body
        self.failures = failures


def accepts_gzip(request: web.Request) -> bool:
    """True when the Accept-Encoding header allows gzip (and does not give it q=0)."""
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def precomputed_routes(
    registry: LayerRegistry,
    executor: Executor,
    cache: ArrayCache | None = None,
    damage: DamageLog | None = None,
) -> list[Route]:
    """The precomputed routes over ``registry``, reading chunks in ``executor``.

    With ``cache``, encoded chunk bodies are kept (under its byte budget) and served again
    without recomputing them. Regions whose stored data cannot be read are served as zeros
    with a :data:`FILL_HEADER` and recorded in ``damage`` (each bad chunk logged once).
    """
    damage = damage if damage is not None else DamageLog()
    coarse = executor.pool.lane("background") if isinstance(executor, Lane) else executor

    async def get_info(request: web.Request) -> web.Response:
        layer = registry.get(request.match_info["layer_id"])
        volume = layer.volume(request.match_info["version"])
        document = precomputed.info(volume, kind=layer.kind)
        return web.Response(
            text=json.dumps(document),
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    async def get_chunk(request: web.Request) -> web.Response:
        layer = registry.get(request.match_info["layer_id"])
        volume = layer.volume(request.match_info["version"])
        level_index = precomputed.parse_scale_key(request.match_info["scale_key"], volume)
        box = precomputed.parse_chunk_name(request.match_info["chunk"])
        level = volume.levels[level_index]
        sizes = precomputed.chunk_sizes(level, flat_2d=precomputed.is_2d(volume))
        precomputed.check_chunk_box(box, level, sizes)
        gzipped = accepts_gzip(request)
        # Chunks under a version never change, so encoded bodies are cached as they are
        # sent; a hit is answered here without a trip through the worker pool.
        key = ("chunk", layer.layer_id, request.match_info["version"], level_index, box, gzipped)
        cached = cache.get(key) if cache is not None else None
        failures: tuple = ()
        if cached is not None:
            body = cached.data
        else:
            def encoded() -> np.ndarray:
                data, failed = precomputed.read_chunk(volume, level_index, box, gzipped=gzipped)
                if failed:  # an exception, so the cache shares it with waiters but keeps none
                    raise _Filled(data, failed)
                return np.frombuffer(data, dtype=np.uint8)

            loop = asyncio.get_running_loop()
            compute = encoded if cache is None else lambda: cache.get_or_compute(key, encoded)
            # A client that disconnects cancels this handler; the token then stops the
            # computation at its next check instead of letting it run to the end.
            token = CancelToken()
            version = request.match_info["version"]
            base_version = next((version.removesuffix(v) for v in layer.variants
                                 if version.endswith(v)), version)

            def superseded() -> bool:
                return not layer.is_current(base_version)

            try:
                if isinstance(executor, Lane):
                    # The order: finest-level chunks of the current version, then
                    # training of the newest labels, then coarse levels (what a viewer
                    # shows while it waits, prefetch-like) and chunks the training will
                    # replace; a chunk of a superseded version is dropped (410).
                    lane = executor if level_index == 0 else coarse
                    future = lane.submit_task(compute, token=token, stale=superseded,
                                              demote=layer.outdated,
                                              priority=layer.chunk_priority(level_index, box))
                    body = (await asyncio.wrap_future(future)).data
                else:
                    body = (await loop.run_in_executor(executor,
                                                       cancellable(token, compute))).data
            except asyncio.CancelledError:
                token.cancel()
                raise
            except Cancelled:
                if superseded():
                    raise GoneError(f"version {version} of {layer.layer_id} was superseded "
                                    "while its chunk waited") from None
                raise
            except _Filled as filled:
                body, failures = filled.body, filled.failures
        headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
        if failures:
            # Filled, not the data: not cached anywhere, so a repaired source shows later.
            damage.record(failures)
            headers["Cache-Control"] = "no-store"
            headers[FILL_HEADER] = "; ".join(str(f) for f in failures)[:1000]
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, content_type="application/octet-stream", headers=headers)

    errors = {
        400: "Malformed request, or a chunk off the grid or outside the volume",
        404: "Unknown layer, version or scale",
        410: "This version of the layer was superseded",
        503: "Not ready yet; retry after the Retry-After delay",
    }
    return [
        Route(
            "GET",
            "/precomputed/{layer_id}/{version}/info",
            get_info,
            name="precomputed_info",
            summary="Neuroglancer precomputed info: every pyramid level of a layer",
            parameters=_LAYER_PARAMS,
            responses={200: "The info JSON", **errors},
            tags=("precomputed",),
            cors=True,
        ),
        Route(
            "GET",
            "/precomputed/{layer_id}/{version}/{scale_key}/{chunk}",
            get_chunk,
            name="precomputed_chunk",
            summary="One raw chunk: little-endian (c, z, y, x) bytes, gzip when accepted",
            parameters=(
                *_LAYER_PARAMS,
                Param("scale_key", description="Pyramid level key, s0 (finest) to sN"),
                Param("chunk", description="Chunk box x0-x1_y0-y1_z0-z1 on the chunk grid"),
            ),
            responses={200: "Chunk bytes", **errors},
            content_type="application/octet-stream",
            tags=("precomputed",),
            cors=True,
        ),
    ]
