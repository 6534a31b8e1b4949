"""The OpenAPI 3.1 document, generated from the route table the app registered."""

from __future__ import annotations

import re
from typing import Any

import ilastik_web
from ilastik_web.server.routing import RouteTable

_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def path_parameters(path: str) -> list[str]:
    """Names of the ``{name}`` segments of an aiohttp path."""
    return _PATH_PARAM.findall(path)


def openapi_document(table: RouteTable, *, server_url: str | None = None) -> dict[str, Any]:
    """Describe every route of ``table``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in table:
        parameters = [
            {
                "name": p.name,
                "in": p.location,
                "required": True if p.location == "path" else p.required,
                "description": p.description,
                "schema": p.schema,
            }
            for p in route.parameters
        ]
        documented = {p.name for p in route.parameters if p.location == "path"}
        for name in path_parameters(route.path):
            if name not in documented:
                parameters.append(
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                )
        responses = {
            str(status): {
                "description": text,
                **(
                    {"content": {route.content_type: {}}}
                    if 200 <= status < 300 and route.content_type
                    else {}
                ),
            }
            for status, text in route.responses.items()
        }
        if not route.public:
            responses.setdefault("401", {"description": "Authentication required"})
            responses.setdefault("403", {"description": f"Needs the {route.role} role"})
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "tags": list(route.tags),
            "parameters": parameters,
            "responses": responses,
            "x-required-role": route.role,
        }
        if route.request_body:
            operation["requestBody"] = {
                "description": route.request_body,
                "required": True,
                "content": {"application/json": {
                    "schema": route.body_schema or {"type": "object"}}},
            }
        if route.public:
            operation["security"] = []
        paths.setdefault(_PATH_PARAM.sub(r"{\1}", route.path), {})[route.method.lower()] = (
            operation
        )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "ilastik-web", "version": ilastik_web.__version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
