"""The app factory: one aiohttp application serving API, precomputed data and viewer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from ilastik_web.cache import ArrayCache
from ilastik_web.config import ServerConfig
from ilastik_web.sam import ModelSpec, SamService, SamSettings
from ilastik_web.server.api import api_routes
from ilastik_web.server.auth import auth_middleware, policy_for_token
from ilastik_web.server.context import CONTEXT_KEY, ServerContext
from ilastik_web.server.errors import error_middleware
from ilastik_web.server.layers import LayerRegistry, ServedLayer
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routes_jobs import job_routes
from ilastik_web.server.routes_precomputed import precomputed_routes
from ilastik_web.server.routes_project import project_routes
from ilastik_web.server.routes_sam import sam_routes
from ilastik_web.server.routes_viewer import viewer_routes
from ilastik_web.server.routing import RouteTable
from ilastik_web.server.viewer_sessions import ViewerSession, ViewerSessions
from ilastik_web.server.viewer_state import initial_state
from neuroglancer_ext.extension import install_extension
from neuroglancer_ext.static import StaticClient

if TYPE_CHECKING:
    from ilastik_web.project import Project

log = logging.getLogger(__name__)

#: Largest request body accepted (viewer states are the biggest).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


@web.middleware
async def cors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Let any origin read our data (Neuroglancer instances elsewhere); answer preflights."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["Access-Control-Allow-Origin"] = "*"
        raise
    if not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def create_app(
    config: ServerConfig | None = None,
    *,
    layers: Iterable[ServedLayer] = (),
    projects: Iterable[tuple[str, Project, str]] = (),
    cache: ArrayCache | None = None,
    client: StaticClient | None = None,
) -> web.Application:
    """Build the application.

    Parameters
    ----------
    config
        Settings (defaults: open access, 1 GiB cache, 4 worker threads).
    layers
        Layers to serve from the start, bottom first; the default viewer shows them,
        centred on the first source.
    projects
        ``(project_id, project, source_layer_id)`` for each project to serve: its labels
        (and, once trained, predictions) become layers, its routes live under
        ``/api/projects/<project_id>``. The app closes the projects on cleanup.
    cache
        The array cache the layers' computed levels use (one is made from
        ``config.cache_bytes`` if not given).
    client
        The Neuroglancer client files (default: from the ``neuroglancer`` package).

    Returns
    -------
    aiohttp.web.Application
        With the :class:`ServerContext` at ``app[CONTEXT_KEY]``.
    """
    config = config or ServerConfig()
    cache = cache or ArrayCache(config.cache_bytes)
    registry = LayerRegistry()
    for layer in layers:
        registry.add(layer)
    sessions = ViewerSessions()
    table = RouteTable()
    ctx = ServerContext(
        config=config,
        registry=registry,
        sessions=sessions,
        cache=cache,
        executor=ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="ilastik-web"),
        policy=policy_for_token(config.token),
        table=table,
        client=client or install_extension(StaticClient()),
        projects=ProjectHub(registry, cache),
    )
    for project_id, project, source_layer_id in projects:
        ctx.projects.add(project_id, project, source_layer_id=source_layer_id)
    sources = registry.sources()
    reference = sources[0].volume(sources[0].version) if sources else None
    session = sessions.add(
        ViewerSession(config.viewer_token, initial_state(registry.list(), reference))
    )
    session.follow(registry)

    table.extend(api_routes(ctx))
    table.extend(precomputed_routes(registry, ctx.executor, cache))
    table.extend(viewer_routes(sessions, ctx.client, ctx.executor))
    table.extend(project_routes(ctx.projects, ctx.executor))
    table.extend(job_routes(ctx.projects, ctx.executor, cache=cache,
                            allowed_roots=config.allowed_roots or None))
    sam = SamService(SamSettings(
        models=tuple(ModelSpec.parse(text) for text in config.sam_models),
        device=config.sam_device,
        embedding_dir=config.sam_cache_dir,
        embedding_disk_bytes=config.sam_cache_bytes,
    ))
    table.extend(sam_routes(sam, registry, ctx.projects, cache=cache,
                            instances_dir=config.sam_cache_dir,
                            allowed_roots=config.allowed_roots or None))

    app = web.Application(
        middlewares=[cors_middleware, error_middleware, auth_middleware(ctx.policy, table)],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[CONTEXT_KEY] = ctx
    table.register(app)

    async def close_streams(app: web.Application) -> None:
        sessions.close_all()

    async def stop_workers(app: web.Application) -> None:
        ctx.executor.shutdown(wait=False, cancel_futures=True)
        ctx.projects.close()
        sam.close()

    app.on_shutdown.append(close_streams)
    app.on_cleanup.append(stop_workers)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on ``host:port``; cancelled requests cancel their handlers."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


async def serve_forever(app: web.Application, host: str, port: int) -> None:
    """Serve until cancelled (Ctrl-C), then shut down cleanly."""
    runner = await serve(app, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
