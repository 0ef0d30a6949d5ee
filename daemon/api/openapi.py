"""The OpenAPI 3.1 document, generated from the route table and the msgspec types it names."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import msgspec

from daemon.api.routes import JOB_ID, REQUEST_ID, ROUTES, RouteDef
from daemon.api.sse import EndView
from daemon.api.wire import ErrorBody
from daemon.model import Event

_REF = "#/components/schemas/{name}"
_PATH_PARAMS = {
    "id": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"},
    "job_id": {"type": "string", "pattern": f"^{JOB_ID.pattern}$"},
}


def _types(routes: tuple[RouteDef, ...]) -> list[Any]:
    out: list[Any] = [ErrorBody, Event, EndView]
    for r in routes:
        for t in (r.response, r.body, *r.extra_responses.values()):
            for one in t if isinstance(t, tuple) else (t,):
                if one is not None and one not in out:
                    out.append(one)
    return out


def _schema_of(t: Any, schema: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """A type's schema; a tuple of types is `oneOf` them."""
    if isinstance(t, tuple):
        return {"oneOf": [schema[one] for one in t]}
    return schema[t]


def _content(ctype: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {ctype: {"schema": schema}}


def _operation(r: RouteDef, schema: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": _PATH_PARAMS[n]}
        for n in re.findall(r"{(\w+)}", r.path)
    ]
    for p in r.params:
        s: dict[str, Any] = {"type": "array", "items": p.schema} if p.repeat else p.schema
        entry: dict[str, Any] = {"name": p.name, "in": p.where, "schema": s}
        if p.description:
            entry["description"] = p.description
        if p.repeat:
            entry["explode"] = True
        params.append(entry)
    if r.response is not None:
        ok = _content(r.content_type, _schema_of(r.response, schema))
    elif r.content_type == "text/event-stream":
        ok = _content(r.content_type, {"type": "string", "description": "id/event/data records"})
    elif r.content_type == "application/json":
        ok = _content(r.content_type, {"type": "object"})
    else:
        ok = _content(r.content_type, {"type": "string"})
    responses: dict[str, Any] = {
        str(r.status): {"description": HTTPStatus(r.status).phrase, "content": ok}
    }
    for status, t in r.extra_responses.items():
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": _content("application/json", _schema_of(t, schema)),
        }
    error = _content("application/json", schema[ErrorBody])
    for status in sorted({*r.errors, 401}):
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": error}
    op: dict[str, Any] = {
        "operationId": r.handler.__name__,
        "summary": r.summary,
        "parameters": params,
        "responses": responses,
    }
    if r.body is not None:
        op["requestBody"] = {
            "required": r.body_required,
            "content": _content("application/json", schema[r.body]),
        }
    return op


def build(version: str, routes: tuple[RouteDef, ...] = ROUTES) -> dict[str, Any]:
    types = _types(routes)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r, schema)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "spind control API",
            "version": version,
            "description": "Start, watch and steer job-chain requests. Errors are "
            '`{"error": ..., "details": ...}`; every response echoes `X-Request-Id`.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }


def document(version: str) -> bytes:
    return msgspec.json.encode(build(version))
