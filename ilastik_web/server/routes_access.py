"""Who am I, share links, sign-out: the routes of the access layer.

Owners create a link per role (``viewer``, ``annotator``, ``owner``), optionally
expiring, list them (never their tokens) and revoke them. A link's token is shown once,
in the answer that creates it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ilastik_web.accounts import ROLES
from ilastik_web.errors import InvalidRequestError
from ilastik_web.server.auth import SESSION_COOKIE, TOKEN_QUERY, Access, principal_of
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routing import Param, Route, read_json
from ilastik_web.server.urls import base_url

_PROJECT = Param("project_id", description="Project id")
_LINK = Param("link_id", description="Share link id")


def share_url(base: str, viewer_path: str, project_id: str, token: str) -> str:
    """The page URL that opens ``project_id`` with a share token."""
    return f"{base}{viewer_path}?project={project_id}&{TOKEN_QUERY}={token}"


def access_routes(access: Access, hub: ProjectHub, viewer_path: str) -> list[Route]:
    """Routes over ``access`` for the projects of ``hub``."""

    async def me(request: web.Request) -> web.Response:
        principal = principal_of(request)
        return web.json_response({
            "id": principal.id, "name": principal.name, "admin": principal.admin,
            "user_id": principal.user_id, "projects": access.projects_of(principal),
        })

    async def list_links(request: web.Request) -> web.Response:
        project_id = hub.get(request.match_info["project_id"]).project_id
        now = access.accounts.clock()
        return web.json_response(
            {"links": [link.to_json(now) for link in access.accounts.links(project_id)]})

    async def create_link(request: web.Request) -> web.Response:
        project_id = hub.get(request.match_info["project_id"]).project_id
        body = await read_json(request, max_bytes=4096)
        if not isinstance(body, dict) or body.get("role") not in ROLES:
            raise InvalidRequestError(
                f'expected {{"role": {"|".join(ROLES)}, "expires_in_s"?: seconds}}')
        expires = body.get("expires_in_s")
        if expires is not None and (isinstance(expires, bool)
                                    or not isinstance(expires, int | float)):
            raise InvalidRequestError("expires_in_s must be a number of seconds")
        link, token = access.accounts.create_link(
            project_id, body["role"], expires_in_s=expires, created_by=principal_of(request).id)
        answer: dict[str, Any] = link.to_json(access.accounts.clock())
        answer.update(token=token,
                      url=share_url(base_url(request), viewer_path, project_id, token))
        return web.json_response(answer, status=201)

    async def revoke_link(request: web.Request) -> web.Response:
        project_id = hub.get(request.match_info["project_id"]).project_id
        link = access.accounts.revoke(project_id, request.match_info["link_id"])
        return web.json_response(link.to_json(access.accounts.clock()))

    async def list_members(request: web.Request) -> web.Response:
        project_id = hub.get(request.match_info["project_id"]).project_id
        members = []
        for user_id, role in sorted(access.accounts.members(project_id).items()):
            members.append({"user_id": user_id, "name": access.accounts.get_user(user_id).name,
                            "role": role})
        return web.json_response({"members": members})

    async def set_member(request: web.Request) -> web.Response:
        project_id = hub.get(request.match_info["project_id"]).project_id
        user = access.accounts.get_user(request.match_info["user_id"])
        body = await read_json(request, max_bytes=4096)
        if not isinstance(body, dict) or "role" not in body or (
                body["role"] is not None and body["role"] not in ROLES):
            raise InvalidRequestError(f'expected {{"role": {"|".join(ROLES)}|null}}')
        access.accounts.set_role(project_id, user.id, body["role"])
        return web.json_response({"user_id": user.id, "name": user.name, "role": body["role"]})

    async def logout(request: web.Request) -> web.Response:
        access.sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = web.json_response({"signed_out": True})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    tags = ("access",)
    return [
        Route("GET", "/api/me", me, name="me", role="user", tags=tags,
              summary="The caller: id, name, operator or not, and role per project"),
        Route("POST", "/api/logout", logout, name="logout", role="user", tags=tags,
              summary="End this browser's session"),
        Route("GET", "/api/projects/{project_id}/links", list_links, name="list_links",
              role="owner", parameters=(_PROJECT,), tags=tags,
              summary="The project's share links (without tokens)"),
        Route("POST", "/api/projects/{project_id}/links", create_link, name="create_link",
              role="owner", parameters=(_PROJECT,), tags=tags,
              request_body='{"role": "viewer"|"annotator"|"owner", "expires_in_s"?: number}',
              summary="Create a share link; its token and URL are in this answer only",
              responses={201: "The link with its token and URL", 400: "Bad role or expiry"}),
        Route("GET", "/api/projects/{project_id}/members", list_members, name="list_members",
              role="owner", parameters=(_PROJECT,), tags=tags,
              summary="Signed-in people with a role on the project"),
        Route("PUT", "/api/projects/{project_id}/members/{user_id}", set_member,
              name="set_member", role="owner", tags=tags,
              parameters=(_PROJECT, Param("user_id", description="A user's id (/api/me)")),
              request_body='{"role": "viewer"|"annotator"|"owner"|null (removes)}',
              summary="Give a signed-in person a role on the project, or take it away",
              responses={200: "The member", 400: "Bad role", 404: "No such user"}),
        Route("DELETE", "/api/projects/{project_id}/links/{link_id}", revoke_link,
              name="revoke_link", role="owner", parameters=(_PROJECT, _LINK), tags=tags,
              summary="Revoke a share link (it stops working at once)",
              responses={200: "The revoked link", 404: "No such link"}),
    ]
