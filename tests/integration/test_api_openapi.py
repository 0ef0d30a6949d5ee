"""The OpenAPI document: served, complete (every route), self-consistent (every $ref resolves)."""

from __future__ import annotations

import importlib.util
from typing import Any

from daemon.api.openapi import build
from daemon.api.routes import ROUTES
from tests.integration.fake_service import call, serve


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_served_document_matches_the_routes(tmp_path: Any) -> None:
    async with serve(str(tmp_path)) as s, s.tcp() as c:
        r = await call(c, "GET", "/api/v1/openapi.json")
        doc = r.json
        # every route the app serves is documented, and nothing else
        app_routes = {
            (route.method, route.resource.canonical)
            for route in s.runner.app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == app_routes == {(rd.method, rd.path) for rd in ROUTES}
    assert doc["info"]["version"] == "0.0-test"


def test_every_ref_resolves_and_operations_are_complete() -> None:
    doc = build("1.2.3")
    schemas = doc["components"]["schemas"]
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    create = doc["paths"]["/api/v1/requests"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateBody"
    }
    assert set(create["responses"]) >= {"200", "201", "400", "401", "403", "409", "413", "503"}
    assert schemas["CreateBody"]["required"] == ["type"]
    assert schemas["RequestView"]["properties"]["createdAt"]["type"] == "string"
    assert set(schemas["RequestView"]["required"]) >= {"id", "type", "state", "user", "args"}
    skip = doc["paths"]["/api/v1/requests/{id}/jobs/{job_id}/skip"]["put"]
    assert [p["name"] for p in skip["parameters"]] == ["id", "job_id"]


def test_valid_openapi_3_1_when_a_validator_is_installed() -> None:
    doc = build("1.2.3")
    assert doc["openapi"] == "3.1.0"
    if importlib.util.find_spec("openapi_spec_validator") is not None:
        from openapi_spec_validator import validate

        validate(doc)
