"""What route handlers share, owned by one app (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from ilastik_web.cache import ArrayCache
from ilastik_web.config import ServerConfig
from ilastik_web.damage import DamageLog
from ilastik_web.resources import Lane, Resources
from ilastik_web.server.auth import Access
from ilastik_web.server.layers import LayerRegistry
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routing import RouteTable
from ilastik_web.server.viewer_sessions import ViewerSession, ViewerSessions
from neuroglancer_ext.static import StaticClient


@dataclass
class ServerContext:
    """Everything the routes of one app work with.

    Route modules take it as ``xxx_routes(ctx) -> list[Route]``; later groups (labels,
    classification, jobs) add their own objects here.
    """

    config: ServerConfig
    registry: LayerRegistry
    sessions: ViewerSessions
    cache: ArrayCache
    resources: Resources
    access: Access
    table: RouteTable
    client: StaticClient
    projects: ProjectHub
    damage: DamageLog = field(default_factory=DamageLog)

    @property
    def executor(self) -> Lane:
        """Where small blocking work of a request runs (the interactive lane)."""
        return self.resources.interactive

    @property
    def default_session(self) -> ViewerSession:
        return self.sessions.get(self.config.viewer_token)

    def viewer_path(self) -> str:
        """Path of the default viewer page."""
        return f"/v/{self.config.viewer_token}/"


CONTEXT_KEY = web.AppKey("ilastik_web_context", ServerContext)
