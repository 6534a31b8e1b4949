"""What the viewer should tell the user about the data: unreadable chunks, guessed metadata.

``GET /api/notices`` lists the bad chunks met so far (source, region, reason; each also
logged once) and the warnings of the opened sources (a voxel size the metadata lacked).
The side panel polls it and shows each notice once.
"""

from __future__ import annotations

from aiohttp import web

from ilastik_web.server.context import ServerContext
from ilastik_web.server.routing import Route


def notice_routes(ctx: ServerContext) -> list[Route]:
    async def get_notices(request: web.Request) -> web.Response:
        bad = ctx.damage.list()
        warnings = [
            {"source": layer.name, "layer": layer.layer_id, "message": message}
            for layer in ctx.registry.sources()
            for message in layer.warnings
        ]
        return web.json_response({
            "bad_chunks": [chunk.to_json() for chunk in bad],
            "bad_chunks_not_listed": ctx.damage.dropped,
            "warnings": warnings,
        })

    return [
        Route("GET", "/api/notices", get_notices, name="notices",
              summary="Unreadable chunks met so far (shown empty) and source warnings",
              responses={200: "{bad_chunks: [...], warnings: [...]}"}, tags=("api",)),
    ]
