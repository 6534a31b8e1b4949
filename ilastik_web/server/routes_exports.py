"""Project export routes: the project as a desktop ilastik ``.ilp`` download, and the
painted labels as an OME-Zarr (with class colours) written next to the project.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from ilastik_web.errors import InvalidRequestError
from ilastik_web.exports import export_labels
from ilastik_web.ilp.exporter import export_ilp
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.sources.location import check_allowed

T = TypeVar("T")

_PROJECT = Param("project_id", description="Project id, as listed by /api/projects")


def _ilp_bytes(project) -> bytes:
    with tempfile.TemporaryDirectory(prefix="ilastik-web-ilp-") as folder:
        return export_ilp(project, Path(folder) / "project.ilp").read_bytes()


def _labels_output(project, body) -> Path:
    output = body.get("output") if isinstance(body, dict) else None
    if output is None:
        if project.directory is None:
            raise InvalidRequestError("this project lives in memory only; give an output path")
        folder = project.directory / "exports"
        folder.mkdir(exist_ok=True)
        return folder / f"labels-r{project.labels.revision}.ome.zarr"
    if not isinstance(output, str) or not output.strip():
        raise InvalidRequestError("output must be a path")
    return Path(output)


def export_routes(hub: ProjectHub, executor: Executor, *,
                  allowed_roots: Sequence[Path] | None = None) -> list[Route]:
    """Export routes over the projects in ``hub``; blocking work runs in ``executor``."""

    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def download_ilp(request: web.Request) -> web.Response:
        served = hub.get(request.match_info["project_id"])
        body = await run(lambda: _ilp_bytes(served.project))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", served.project_id) or "project"
        return web.Response(body=body, content_type="application/x-hdf5", headers={
            "Content-Disposition": f'attachment; filename="{name}.ilp"'})

    async def write_labels(request: web.Request) -> web.Response:
        served = hub.get(request.match_info["project_id"])
        body = await read_json(request) if request.can_read_body else {}
        output = _labels_output(served.project, body)
        output = check_allowed(output, allowed_roots, str(output))
        path = await run(lambda: export_labels(served.project, output))
        return web.json_response({"path": str(path), "revision": served.project.labels.revision})

    tags = ("exports",)
    return [
        Route("GET", "/api/projects/{project_id}/export.ilp", download_ilp, name="export_ilp",
              summary="the project as a desktop ilastik 1.4 .ilp (labels, classes, features)",
              role="viewer", parameters=(_PROJECT,), content_type="application/x-hdf5",
              tags=tags),
        Route("POST", "/api/projects/{project_id}/exports/labels", write_labels,
              name="export_labels",
              summary="write the painted labels as OME-Zarr 0.4 with class colours "
                      '(body {"output"?: path}; default: exports/ in the project folder)',
              role="owner", parameters=(_PROJECT,), tags=tags),
    ]
