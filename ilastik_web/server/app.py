"""The app factory: one aiohttp application serving API, precomputed data and viewer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from hpc.engine_config import EngineRegistry
from hpc.local_process import ProcessLauncher
from ilastik_web.config import ServerConfig
from ilastik_web.resources import EXPORT_NICE, Resources
from ilastik_web.sam import ModelSpec, SamService, SamSettings
from ilastik_web.server.api import api_routes
from ilastik_web.server.auth import auth_middleware, build_access
from ilastik_web.server.collection_instances import item_instances
from ilastik_web.server.context import CONTEXT_KEY, ServerContext
from ilastik_web.server.errors import error_middleware
from ilastik_web.server.instance_layer import InstanceLayers
from ilastik_web.server.layers import LayerRegistry, ServedLayer
from ilastik_web.server.metrics import RequestMetrics, metrics_middleware, metrics_routes
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routes_access import access_routes
from ilastik_web.server.routes_collection import CollectionSite, collection_routes
from ilastik_web.server.routes_collection_jobs import collection_job_routes
from ilastik_web.server.routes_exports import export_routes
from ilastik_web.server.routes_instances import instance_routes
from ilastik_web.server.routes_jobs import job_routes
from ilastik_web.server.routes_login import login_routes
from ilastik_web.server.routes_notices import notice_routes
from ilastik_web.server.routes_precomputed import precomputed_routes
from ilastik_web.server.routes_project import project_routes
from ilastik_web.server.routes_sam import sam_routes
from ilastik_web.server.routes_start import start_routes
from ilastik_web.server.routes_viewer import viewer_routes
from ilastik_web.server.routing import RouteTable
from ilastik_web.server.viewer_sessions import ViewerSession, ViewerSessions
from ilastik_web.server.viewer_state import initial_state
from ilastik_web.server.web_safety import cors_middleware, safety_middleware
from neuroglancer_ext.extension import install_extension
from neuroglancer_ext.static import StaticClient

if TYPE_CHECKING:
    from ilastik_web.collections import Collection
    from ilastik_web.project import Project

log = logging.getLogger(__name__)

#: Largest request body accepted (viewer states are the biggest).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def create_app(
    config: ServerConfig | None = None,
    *,
    layers: Iterable[ServedLayer] = (),
    projects: Iterable[tuple[str, Project, str]] = (),
    resources: Resources | None = None,
    client: StaticClient | None = None,
    collection: Collection | None = None,
) -> web.Application:
    """Build the application.

    Parameters
    ----------
    config
        Settings (defaults: open access, 2 GiB of caches, one worker thread per core).
    layers
        Layers to serve from the start, bottom first; the default viewer shows them,
        centred on the first source.
    projects
        ``(project_id, project, source_layer_id)`` for each project to serve: its labels
        (and, once trained, predictions) become layers, its routes live under
        ``/api/projects/<project_id>``. The app closes the projects on cleanup.
    resources
        The caches and worker threads everything shares (made from
        ``config.memory_bytes`` and ``config.threads`` if not given). Layers and projects
        opened before the app should use the same object; the app closes it on cleanup.
    client
        The Neuroglancer client files (default: from the ``neuroglancer`` package).
    collection
        An image collection to serve (default: ``config.collection_dir``'s, if set).

    Returns
    -------
    aiohttp.web.Application
        With the :class:`ServerContext` at ``app[CONTEXT_KEY]``.
    """
    config = config or ServerConfig()
    resources = resources or Resources(config.memory_bytes, config.threads)
    cache = resources.cache("sources")
    registry = LayerRegistry()
    for layer in layers:
        registry.add(layer)
    sessions = ViewerSessions()
    table = RouteTable()
    hub = ProjectHub(registry, cache)
    ctx = ServerContext(
        config=config,
        registry=registry,
        sessions=sessions,
        cache=cache,
        resources=resources,
        access=build_access(config, hub),
        table=table,
        client=client or install_extension(StaticClient()),
        projects=hub,
    )
    for project_id, project, source_layer_id in projects:
        ctx.projects.add(project_id, project, source_layer_id=source_layer_id)
    if collection is None and config.collection_dir is not None:
        from ilastik_web.collections import Collection

        collection = Collection.from_folder(config.collection_dir,
                                            allowed_roots=config.allowed_roots or None)
    site = (CollectionSite(collection, registry, resources.cache("instances"),
                           features=resources.cache("features"))
            if collection is not None else None)
    sources = registry.sources()
    reference = sources[0].volume(sources[0].version) if sources else None
    if reference is None and site is not None:
        reference = site.image.volume(site.image.version)
    session = sessions.add(
        ViewerSession(config.viewer_token, initial_state(registry.list(), reference))
    )
    session.follow(registry)

    table.extend(api_routes(ctx))
    table.extend(access_routes(ctx.access, ctx.projects, ctx.viewer_path()))
    table.extend(login_routes(ctx.access))
    table.extend(start_routes(ctx.access, hub, ctx.executor, resources,
                              projects_dir=config.projects_dir,
                              allowed_roots=config.allowed_roots, url_hosts=config.url_hosts,
                              allow_local_urls=config.allow_local_urls))
    table.extend(precomputed_routes(registry, resources.chunks, resources.cache("chunks"),
                                    ctx.damage))
    table.extend(notice_routes(ctx))
    table.extend(viewer_routes(sessions, ctx.client, resources.interactive))
    table.extend(project_routes(ctx.projects, resources.interactive, ctx.access))
    sam = SamService(SamSettings(
        models=tuple(ModelSpec.parse(text) for text in config.sam_models),
        device=config.sam_device,
        embedding_dir=config.sam_cache_dir,
        embedding_disk_bytes=config.sam_cache_bytes,
    ))
    instance_layers = InstanceLayers(registry, resources.cache("instances"),
                                     config.sam_cache_dir, ctx.projects)
    # One launcher and one set of engines for the projects' jobs and the collection's.
    launcher = ProcessLauncher(resources.export_threads, EXPORT_NICE)
    engines = EngineRegistry(config.engines)
    table.extend(job_routes(ctx.projects, resources.interactive, cache=cache,
                            allowed_roots=config.allowed_roots or None,
                            resources=resources, engines=engines, sam=sam,
                            launcher=launcher))
    table.extend(export_routes(ctx.projects, resources.interactive,
                               allowed_roots=config.allowed_roots or None))
    table.extend(sam_routes(sam, registry, ctx.projects, cache=resources.cache("instances"),
                            instances_dir=config.sam_cache_dir, access=ctx.access,
                            allowed_roots=config.allowed_roots or None,
                            instances=instance_layers))
    table.extend(instance_routes(
        instance_layers, resources.interactive, ctx.access,
        targets=({site.objects.layer_id: item_instances(site.objects, site.collection)}
                 if site is not None else None)))

    table.extend(collection_routes(site, sam, resources.interactive))
    table.extend(collection_job_routes(
        site, sam, resources.interactive,
        launcher=launcher, engines=engines, allowed_roots=config.allowed_roots or None))

    request_metrics = RequestMetrics()
    table.extend(metrics_routes(ctx, request_metrics))

    app = web.Application(
        middlewares=[metrics_middleware(request_metrics, table), cors_middleware(table),
                     error_middleware,
                     safety_middleware(table, loopback_only=ctx.access.open),
                     auth_middleware(ctx.access, table)],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[CONTEXT_KEY] = ctx
    table.register(app)

    async def close_streams(app: web.Application) -> None:
        sessions.close_all()

    async def stop_workers(app: web.Application) -> None:
        ctx.projects.close()
        if site is not None:
            site.close()
        sam.close()
        resources.close()

    app.on_shutdown.append(close_streams)
    app.on_cleanup.append(stop_workers)
    return app


#: Seconds a stopping server lets requests in flight finish before it cancels them. A
#: viewer keeps chunk requests open that may wait behind a training; aiohttp's default
#: (60 s) made SIGTERM take up to a minute. Acknowledged edits are on disk already.
SHUTDOWN_GRACE_S = 3.0


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on ``host:port``; cancelled requests cancel their handlers."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=SHUTDOWN_GRACE_S)
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
