"""The OpenAPI 3 document, generated from the same route table as the Falcon resources."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pvc_api.auth import HEADER
from pvc_api.schemas import ref
from pvc_api.spec import Param, Route

if TYPE_CHECKING:
    from pvc_api.app import Api

_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_ERRORS = {400: "Invalid parameter or request", 401: "Missing or wrong API key",
           404: "Not found", 503: "ZooKeeper is unreachable"}


def _param_schema(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _TYPES[param.type]}
    if param.choices:
        schema["enum"] = list(param.choices)
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    if param.maximum is not None:
        schema["maximum"] = param.maximum
    if param.default is not None and not param.many:
        schema["default"] = param.default
    return {"type": "array", "items": schema} if param.many else schema


def _parameter(param: Param) -> dict[str, Any]:
    doc = {"name": param.name, "in": param.location,
           "required": param.required or param.location == "path",
           "schema": _param_schema(param)}
    if param.description:
        doc["description"] = param.description
    if param.many:
        doc.update(style="form", explode=True)
    return doc


def _responses(route: Route) -> dict[str, Any]:
    codes: dict[int, tuple[str, dict[str, Any] | None]] = dict(route.responses)
    auto = {400: bool(route.query_params), 401: route.auth, 404: bool(route.path_fields),
            503: route.zookeeper}
    for code, wanted in auto.items():
        if wanted and code not in codes:
            codes[code] = (_ERRORS[code], ref("Message"))
    out = {}
    for code, (description, schema) in sorted(codes.items()):
        entry: dict[str, Any] = {"description": description}
        if schema is not None:
            media = schema.get("x-media-type", "application/json")
            body = {k: v for k, v in schema.items() if k != "x-media-type"}
            entry["content"] = {media: {"schema": body}}
        out[str(code)] = entry
    return out


def _operation(route: Route) -> dict[str, Any]:
    declared = {p.name: p for p in route.params if p.location == "path"}
    params = [declared.get(f) or Param(f, location="path") for f in route.path_fields]
    op: dict[str, Any] = {
        "operationId": re.sub(r"[^a-z0-9]+", "_", f"{route.method} {route.path}".lower())
                         .strip("_") + ("_root" if route.path == "/" else ""),
        "summary": route.summary,
        "parameters": [_parameter(p) for p in [*params, *route.query_params]],
        "responses": _responses(route),
    }
    if route.description:
        op["description"] = route.description
    if route.tag:
        op["tags"] = [route.tag]
    if not route.auth:
        op["security"] = []
    return op


def document(api: Api, server_url: str) -> dict[str, Any]:
    """The whole document; ``server_url`` is the API base as the client reached it."""
    paths: dict[str, dict[str, Any]] = {}
    for route in api.routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "PVC API", "version": "1.0",
                 "description": "Parallel Virtual Cluster REST API v1 (see docs/api.md). "
                                "Parameters are read from the query string, a form body or a "
                                "JSON object body."},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": dict(api.schemas),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": HEADER}},
        },
        "security": [{"ApiKey": []}],
    }
