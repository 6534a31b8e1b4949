"""JSON API routes: health, sources, layers, the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web

import ilastik_web
from ilastik_web.server.context import ServerContext
from ilastik_web.server.health import Readiness
from ilastik_web.server.layers import ServedLayer, StaticLayer
from ilastik_web.server.openapi import openapi_document
from ilastik_web.server.routing import Param, Route
from ilastik_web.server.served_pyramid import is_native
from ilastik_web.server.urls import base_url
from ilastik_web.server.viewer_state import precomputed_path
from neuroglancer_ext.precomputed import served_dtype


def _xyz(zyx: tuple[Any, Any, Any]) -> dict[str, Any]:
    z, y, x = zyx
    return {"x": x, "y": y, "z": z}


def describe_layer(layer: ServedLayer, base: str) -> dict[str, Any]:
    """A layer as the API lists it, with absolute URLs under ``base``."""
    version = layer.version
    precomputed = base + precomputed_path(layer.layer_id, version)
    entry: dict[str, Any] = {
        "id": layer.layer_id,
        "name": layer.name,
        "kind": layer.kind,
        "version": version,
        "precomputed": precomputed,
        "neuroglancer_source": f"precomputed://{precomputed}",
    }
    if isinstance(layer, StaticLayer):
        entry["location"] = layer.location
        volume = layer.volume(version)
        level0 = volume.base
        entry.update(
            shape=_xyz(level0.shape),
            shape_zyx=list(level0.shape),
            dtype=level0.dtype.name,
            served_dtype=served_dtype(level0.dtype).name,
            channels=level0.num_channels,
            voxel_size_nm=_xyz(level0.voxel_size),
            voxel_size_nm_zyx=list(level0.voxel_size),
            levels=[
                {
                    "key": f"s{i}",
                    "shape_zyx": list(level.shape),
                    "voxel_size_nm_zyx": list(level.voxel_size),
                    "native": is_native(level),
                }
                for i, level in enumerate(volume.levels)
            ],
        )
    return entry


def api_routes(ctx: ServerContext) -> list[Route]:
    """Health, source and layer listings, and the API document."""

    readiness = Readiness(ctx.config)

    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "version": ilastik_web.__version__, "layers": len(ctx.registry),
             **await readiness.report()}
        )

    async def list_sources(request: web.Request) -> web.Response:
        base = base_url(request)
        return web.json_response(
            {"sources": [describe_layer(layer, base) for layer in ctx.registry.sources()]}
        )

    async def get_source(request: web.Request) -> web.Response:
        layer = ctx.registry.get(request.match_info["source_id"])
        return web.json_response(describe_layer(layer, base_url(request)))

    async def list_layers(request: web.Request) -> web.Response:
        base = base_url(request)
        return web.json_response(
            {"layers": [describe_layer(layer, base) for layer in ctx.registry.list()]}
        )

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(openapi_document(ctx.table, server_url=base_url(request)))

    async def root(request: web.Request) -> web.Response:
        # The laptop case opens the viewer; a shared server starts on its project list.
        raise web.HTTPFound(ctx.viewer_path().lstrip("/") if ctx.access.open else "start")

    async def favicon(request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})

    tags = ("api",)
    return [
        Route("GET", "/favicon.ico", favicon, name="favicon", role="public",
              summary="No icon (keeps browser consoles free of 404s)",
              responses={204: "No content"}, content_type="", tags=("viewer",)),
        Route("GET", "/", root, name="root", summary="Redirect to the viewer", role="user",
              responses={302: "Redirect to the default viewer"}, content_type="text/html",
              tags=("viewer",)),
        Route("GET", "/api/health", health, name="health", role="public",
              summary="Liveness (status ok) and readiness: ready or degraded, with a check "
                      "per storage root, Slurm engine and SAM model (no authentication)",
              tags=tags),
        Route("GET", "/api/sources", list_sources, name="list_sources",
              summary="Opened sources: id, shape, dtype, channels, voxel size, levels, "
                      "precomputed URL", tags=tags),
        Route("GET", "/api/sources/{source_id}", get_source, name="get_source",
              summary="One source or layer by id",
              parameters=(Param("source_id", description="Source id"),),
              responses={200: "The source", 404: "No such source"}, tags=tags),
        Route("GET", "/api/layers", list_layers, name="list_layers",
              summary="Every served layer with its current version and precomputed URL",
              tags=tags),
        Route("GET", "/api/openapi.json", openapi, name="openapi", role="user",
              summary="This API's OpenAPI document", tags=tags),
    ]
