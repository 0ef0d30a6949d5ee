"""Trace ids: echoed on every response, generated when missing or unsafe, in every log line."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon.api.auth import AuthSettings
from tests.integration.fake_service import Served, call, capture_logs, serve

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
async def srv(tmp_path: Any) -> AsyncIterator[Served]:
    async with serve(str(tmp_path), max_body_bytes=1024) as s:
        yield s


@pytest.mark.parametrize(
    ("method", "path", "kw", "status"),
    [
        ("GET", "/api/v1/version", {}, 200),
        ("POST", "/api/v1/requests", {"json": {"type": "noop"}}, 201),
        ("POST", "/api/v1/requests", {"data": b"{"}, 400),
        ("GET", "/api/v1/requests/NOTANID", {}, 404),
        ("GET", "/nowhere", {}, 404),
        ("DELETE", "/api/v1/version", {}, 405),
        ("POST", "/api/v1/requests", {"data": b"x" * 2000}, 413),
        ("POST", "/api/v1/requests", {"json": {"type": "explode"}}, 500),
    ],
)
async def test_client_trace_id_is_echoed_everywhere(
    srv: Served, method: str, path: str, kw: dict[str, Any], status: int
) -> None:
    async with srv.tcp() as c:
        r = await call(c, method, path, headers={"X-Request-Id": "abc.DEF:1-2_3"}, **kw)
    assert r.status == status
    assert r.headers["x-request-id"] == "abc.DEF:1-2_3"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "semi;colon", "ünï", "a/b"])
async def test_unsafe_trace_ids_are_replaced(srv: Served, bad: str) -> None:
    async with srv.tcp() as c:
        r = await call(c, "GET", "/api/v1/version", headers={"X-Request-Id": bad})
    assert GENERATED.fullmatch(r.headers["x-request-id"])


async def test_generated_ids_differ_and_reach_the_service(srv: Served) -> None:
    async with srv.tcp() as c:
        a = await call(c, "POST", "/api/v1/requests", json={"type": "noop"})
        b = await call(c, "POST", "/api/v1/requests", json={"type": "noop"})
        mine = await call(
            c, "POST", "/api/v1/requests", json={"type": "noop"}, headers={"X-Request-Id": "mine-1"}
        )
    ids = [a.headers["x-request-id"], b.headers["x-request-id"]]
    assert ids[0] != ids[1] and all(GENERATED.fullmatch(i) for i in ids)
    assert [c[3] for c in srv.service.calls if c[0] == "create_request"] == [*ids, "mine-1"]
    assert mine.json["traceId"] == "mine-1"


async def test_one_access_log_line_per_call_with_the_trace_id(srv: Served) -> None:
    with capture_logs() as logs:
        async with srv.unix() as c:
            await call(c, "GET", "/api/v1/requests", headers={"X-Request-Id": "log-1"})
            await call(c, "PUT", "/api/v1/requests/bad/stop", headers={"X-Request-Id": "log-2"})
    access = [r for r in logs if r["extra"].get("action") == "http_access"]
    assert [
        (r["extra"]["trace_id"], r["extra"]["method"], r["extra"]["path"], r["extra"]["status"])
        for r in access
    ] == [
        ("log-1", "GET", "/api/v1/requests", 200),
        ("log-2", "PUT", "/api/v1/requests/bad/stop", 404),
    ]
    assert all(isinstance(r["extra"]["ms"], float) and r["extra"]["user"] for r in access)
    assert "GET /api/v1/requests 200" in access[0]["message"]


async def test_401_responses_carry_the_trace_id(tmp_path: Any) -> None:
    async with serve(str(tmp_path), auth=AuthSettings(enabled=True)) as s, s.tcp() as c:
        r = await call(c, "GET", "/api/v1/requests", headers={"X-Request-Id": "who-1"})
    assert (r.status, r.headers["x-request-id"]) == (401, "who-1")
