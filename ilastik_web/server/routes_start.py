"""The start page (the projects one may see) and creating a project from a dataset.

``POST /api/projects`` takes ``{"id", "source", "classes"?}``: ``source`` is a path
under the server's allowed roots (``--allow-root``; without any, paths are refused here)
or an http(s) URL of an OME-Zarr, N5 or precomputed volume, checked by
:func:`~ilastik_web.server.url_guard.check_data_url`. The creator becomes the project's
owner. Signed-in people (accounts) and the operator may create projects; share-link
guests may not.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

from aiohttp import web

from ilastik_web.errors import ForbiddenError, InvalidRequestError
from ilastik_web.resources import Resources
from ilastik_web.server.auth import Access, principal_of
from ilastik_web.server.layers import StaticLayer, make_layer_id
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routing import Route, read_json
from ilastik_web.server.url_guard import check_data_url
from ilastik_web.server.urls import base_url

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DEFAULT_CLASSES = ("Label 1", "Label 2")

START_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ilastik-web projects</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 46em; color: #222; }
li { margin: .3em 0; } .role { color: #666; margin-left: .5em; }
input { width: 100%; margin: .2em 0; } #error { color: #b00; }
</style></head><body>
<h1>Projects</h1>
<p id="who"></p>
<ul id="projects"></ul>
<section id="create" hidden>
  <h2>New project</h2>
  <label>Id <input id="new-id" placeholder="my-project"></label>
  <label>Dataset <input id="new-source"
    placeholder="a path under the allowed folders, or an http(s) URL (OME-Zarr, N5, precomputed)">
  </label>
  <button id="new-create">Create</button>
  <p id="error"></p>
</section>
<script>
(async () => {
  const prefix = location.pathname.replace(/\\/start$/, "");
  const get = async (path) => (await fetch(prefix + path)).json();
  const me = await get("/api/me");
  document.getElementById("who").textContent = "Signed in as " + me.name;
  const list = document.getElementById("projects");
  for (const p of (await get("/api/projects")).projects) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = prefix + "/v/main/?project=" + encodeURIComponent(p.id);
    link.textContent = p.id;
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = p.role + " · " + p.source;
    item.append(link, role);
    list.appendChild(item);
  }
  if (!list.children.length) list.textContent = "No projects shared with you yet.";
  if (me.admin || me.user_id) document.getElementById("create").hidden = false;
  document.getElementById("new-create").onclick = async () => {
    const body = { id: document.getElementById("new-id").value.trim(),
                   source: document.getElementById("new-source").value.trim() };
    const r = await fetch(prefix + "/api/projects", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json();
    if (!r.ok) { document.getElementById("error").textContent = data.error; return; }
    location.href = prefix + "/v/main/?project=" + encodeURIComponent(data.id);
  };
})();
</script></body></html>
"""


def start_routes(access: Access, hub: ProjectHub, executor: Executor, resources: Resources,
                 *,
                 projects_dir: Path | None, allowed_roots: Sequence[Path] = (),
                 url_hosts: Sequence[str] = (), allow_local_urls: bool = False) -> list[Route]:
    """The start page and project creation.

    Parameters
    ----------
    resources
        The server's caches and threads, shared by the projects made here.
    projects_dir
        Where new projects' folders go (None: in memory only).
    allowed_roots
        Folders datasets may come from (none: no paths, URLs only).
    url_hosts, allow_local_urls
        The SSRF guard's host allow-list and whether local addresses pass.
    """
    from ilastik_web.server.routes_project import describe_project

    async def start_page(request: web.Request) -> web.Response:
        return web.Response(text=START_PAGE, content_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    async def create_project(request: web.Request) -> web.Response:
        principal = principal_of(request)
        body = await read_json(request, max_bytes=64 * 1024)
        if not isinstance(body, dict) or not isinstance(body.get("source"), str) \
                or not isinstance(body.get("id"), str):
            raise InvalidRequestError('expected {"id": str, "source": path or URL, '
                                      '"classes"?: [str]}')
        project_id, source = body["id"], body["source"].strip()
        if not _ID.match(project_id):
            raise InvalidRequestError("id must be 1-64 letters, digits, '_' or '-'")
        if project_id in hub.ids():
            raise InvalidRequestError(f"a project with id {project_id!r} exists already")
        classes = body.get("classes", list(DEFAULT_CLASSES))
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) \
                or len(classes) > 32:
            raise InvalidRequestError("classes must be a list of up to 32 names")
        loop = asyncio.get_running_loop()
        if source.startswith(("http://", "https://")):
            await loop.run_in_executor(executor, lambda: check_data_url(
                source, allowed_hosts=url_hosts, allow_local=allow_local_urls))
        elif not allowed_roots:
            raise ForbiddenError("this server takes datasets from URLs only (no --allow-root)")
        elif "\x00" in source:
            raise InvalidRequestError("the path contains a NUL byte")

        def create():
            from ilastik_web.project import Project
            from ilastik_web.sources import open_source

            cache = resources.cache("sources")
            volume = open_source(source, allowed_roots=list(allowed_roots), cache=cache)
            taken = [layer.layer_id for layer in hub.registry.list()]
            layer = StaticLayer(make_layer_id(f"{project_id}-{volume.name or 'data'}", taken),
                                volume, cache=cache, location=source)
            directory = projects_dir / project_id if projects_dir is not None else None
            project = Project.create(directory, layer.volume(layer.version), classes=classes,
                                     location=source, live=True, resources=resources)
            hub.registry.add(layer)
            return hub.add(project_id, project, source_layer_id=layer.layer_id)

        served = await loop.run_in_executor(executor, create)
        if principal.user_id is not None:
            access.accounts.set_role(project_id, principal.user_id, "owner")
        return web.json_response({**describe_project(served, base_url(request)),
                                  "role": "owner"}, status=201)

    tags = ("projects",)
    return [
        Route("GET", "/start", start_page, name="start_page", role="user", tags=("viewer",),
              summary="Start page: the projects you may see; create one", content_type="text/html"),
        Route("POST", "/api/projects", create_project, name="create_project", role="account",
              tags=tags, request_body='{"id": str, "source": path under the allowed roots or '
                                      'http(s) URL, "classes"?: [str]}',
              summary="Create a project from a dataset (you become its owner)",
              responses={201: "The project", 400: "Bad id, source or classes",
                         403: "Path outside the roots, or URL refused", 422: "Unreadable"}),
    ]
