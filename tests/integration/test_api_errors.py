"""Every error status as JSON, hostile input, and a fuzzer that must never reach the 500."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.api.errors import validation_error
from daemon.api.wire import CreateBody, RetryBody
from tests.integration.fake_service import Served, call, capture_logs, raw_http, serve

MAX_BODY = 4096


@pytest.fixture
async def srv(tmp_path: Any) -> AsyncIterator[Served]:
    async with serve(str(tmp_path), max_body_bytes=MAX_BODY) as s:
        yield s


async def _rid(s: Served) -> str:
    async with s.tcp() as c:
        r = await call(c, "POST", "/api/v1/requests", json={"type": "noop"})
    return str(r.json["id"])


@pytest.mark.parametrize(
    ("body", "status", "needle", "field"),
    [
        (b"{", 400, "malformed JSON", None),
        (b"", 400, "body is required", None),
        (b"   ", 400, "body is required", None),
        (b"[]", 400, "Expected `object`, got `array`", ""),
        (b'{"type": 1}', 400, "Expected `str`, got `int`", "type"),
        (b'{"type": ""}', 400, "length >= 1", "type"),
        (b"{}", 400, "missing required field `type`", "type"),
        (b'{"type": "noop", "extra": 1}', 400, "unknown field `extra`", "extra"),
        (b'{"type": "deploy", "args": []}', 400, "Expected `object`", "args"),
        (b'{"type": "deploy", "args": {"app": 1}}', 400, "must be a string", None),
        (b'{"type": "deploy", "args": {}}', 400, "missing required arg 'app'", None),
        (b'{"type": "deploy", "args": {"app": "a", "zone": "b"}}', 400, "unknown arg 'zone'", None),
        (b'{"type": "nosuch"}', 400, "unknown request type", None),
        (b'{"type": "no\\u0000such"}', 400, "unknown request type", None),
        (b'{"type": "\xff\xfe"}', 400, "malformed JSON body: Invalid UTF-8", None),
        (b"\xef\xbb\xbf{}", 400, "malformed JSON", None),
    ],
)
async def test_bad_create_bodies_are_400_naming_the_field(
    srv: Served, body: bytes, status: int, needle: str, field: str | None
) -> None:
    async with srv.tcp() as c:
        r = await call(c, "POST", "/api/v1/requests", data=body)
    assert r.status == status
    assert r.headers["content-type"].startswith("application/json")
    assert needle in r.json["error"]
    if field is not None:
        assert r.json["details"]["field"] == field
    assert srv.service.requests == {}


async def test_arg_errors_name_the_arg(srv: Served) -> None:
    async with srv.tcp() as c:
        r = await call(c, "POST", "/api/v1/requests", json={"type": "deploy", "args": {"app": 7}})
    assert r.json["details"] == {"arg": "app"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs": ["j1", "x"]}, "jobs[1]"),
        ({"jobs": "j1"}, "jobs"),
        ({"jobs": [1]}, "jobs[0]"),
        ({"job": ["j1"]}, "job"),
    ],
)
async def test_bad_retry_bodies(srv: Served, body: Any, field: str) -> None:
    rid = await _rid(srv)
    async with srv.tcp() as c:
        r = await call(c, "PUT", f"/api/v1/requests/{rid}/retry", json=body)
    assert (r.status, r.json["details"]["field"]) == (400, field)


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("state=BOGUS", "unknown state"),
        ("arg=novalue", "key=value"),
        ("arg==x", "key=value"),
        ("since=yesterday", "RFC 3339"),
        ("since=2024-05-01T00:00:00", "offset"),
        ("until=2024-13-01T00:00:00Z", "RFC 3339"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("offset=1.5", "offset"),
        ("type=a&type=b", "more than once"),
        ("colour=red", "unknown query parameter"),
    ],
)
async def test_bad_find_queries(srv: Served, query: str, needle: str) -> None:
    async with srv.tcp() as c:
        r = await call(c, "GET", f"/api/v1/requests?{query}")
    assert r.status == 400
    assert needle in r.json["error"]


async def test_bad_create_query(srv: Served) -> None:
    async with srv.tcp() as c:
        maybe = await call(c, "POST", "/api/v1/requests?dryRun=maybe", json={"type": "noop"})
        other = await call(c, "POST", "/api/v1/requests?dry_run=true", json={"type": "noop"})
    assert (maybe.status, other.status) == (400, 400)
    assert srv.service.requests == {}


HOSTILE_IDS = [
    "%00",
    "A" * 4096,
    "01h0000000000000000000000a",  # lower case
    "01H000000000000000000000IL",  # I and L are not Crockford
    "01H00000000000000000000000X",  # 27 chars
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%FF%FE",
    "%E2%80%AE01H0000000000000000000000",
    "'%20OR%201=1",
]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/api/v1/requests/{}"),
        ("PUT", "/api/v1/requests/{}/stop"),
        ("PUT", "/api/v1/requests/{}/retry"),
        ("GET", "/api/v1/requests/{}/log"),
        ("GET", "/api/v1/requests/{}/events"),
    ],
)
async def test_hostile_request_ids_are_404_json_and_never_reach_the_service(
    srv: Served, bad: str, method: str, template: str
) -> None:
    port = int(srv.url.rsplit(":", 1)[1])
    path = template.format(bad).encode()
    r = await raw_http(
        port, b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (method.encode(), path)
    )
    assert r.status == 404
    assert r.json["error"]
    assert len(r.body) < 1000  # the id is not echoed in full
    assert srv.service.calls == []


@pytest.mark.parametrize("bad", ["j", "J1", "j1234567890", "j-1", "%00", "job1", "j" + "1" * 4000])
async def test_hostile_job_ids(srv: Served, bad: str) -> None:
    rid = await _rid(srv)
    before = list(srv.service.calls)
    async with srv.tcp() as c:
        log = await call(c, "GET", f"/api/v1/requests/{rid}/log/{quote(bad, safe='%')}")
        skip = await call(
            c,
            "PUT",
            f"/api/v1/requests/{rid}/jobs/{quote(bad, safe='%')}/skip",
            json={"reason": "x"},
        )
    assert (log.status, skip.status) == (404, 404)
    assert "job" in log.json["error"]
    assert srv.service.calls == before


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /api/v1/requests/\x00 HTTP/1.1",
        b"GET /api/v1/requests/\xff\xfe HTTP/1.1",
        b"GET ../../etc/passwd HTTP/1.1",
        b"GET /api/v1/requests?type=\xff HTTP/1.1",
        b"GET /api/v1/requests/" + b"A" * 9000 + b" HTTP/1.1",
    ],
)
async def test_unparseable_requests_get_a_clear_4xx(srv: Served, request_line: bytes) -> None:
    port = int(srv.url.rsplit(":", 1)[1])
    r = await raw_http(port, request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert 400 <= r.status < 500
    assert srv.service.calls == []


async def test_dot_segments_do_not_escape_the_api(srv: Served) -> None:
    port = int(srv.url.rsplit(":", 1)[1])
    r = await raw_http(
        port, b"GET /api/v1/requests/../version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert r.status == 404 and r.json["error"] == "not found"


async def test_unknown_route_is_json_404(srv: Served) -> None:
    async with srv.tcp() as c:
        r = await call(c, "GET", "/api/v2/requests")
        root = await call(c, "GET", "/")
    assert (r.status, r.json["error"]) == (404, "not found")
    assert root.status == 404


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/requests", {"GET", "HEAD", "POST"}),
        ("POST", "/api/v1/version", {"GET", "HEAD"}),
        ("GET", "/api/v1/requests/01H00000000000000000000000/stop", {"PUT"}),
        ("PATCH", "/metrics", {"GET", "HEAD"}),
    ],
)
async def test_wrong_method_is_405_with_allow(
    srv: Served, method: str, path: str, allowed: set[str]
) -> None:
    async with srv.tcp() as c:
        r = await call(c, method, path)
    assert r.status == 405
    assert set(r.headers["allow"].split(",")) == allowed
    assert set(r.json["details"]["allowed"]) == allowed


async def test_body_over_the_limit_is_413(srv: Served) -> None:
    big = json.dumps({"type": "deploy", "args": {"app": "x" * MAX_BODY}}).encode()
    fits = json.dumps({"type": "deploy", "args": {"app": "x" * (MAX_BODY - 100)}}).encode()
    port = int(srv.url.rsplit(":", 1)[1])

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    async with srv.tcp() as c:
        declared = await call(c, "POST", "/api/v1/requests", data=big)
        chunked = await call(c, "POST", "/api/v1/requests", data=chunks())
        ok = await call(c, "POST", "/api/v1/requests", data=fits)
    # a huge Content-Length is refused without waiting for the body
    lying = await raw_http(
        port,
        b"POST /api/v1/requests HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
        b"Connection: close\r\n\r\n{",
    )
    assert (declared.status, chunked.status, lying.status, ok.status) == (413, 413, 413, 201)
    assert (
        declared.json
        == chunked.json
        == lying.json
        == {
            "error": f"request body larger than {MAX_BODY} bytes",
            "details": {"maxBytes": MAX_BODY},
        }
    )
    assert len(srv.service.requests) == 1


async def test_unexpected_errors_are_500_json_without_internals(srv: Served) -> None:
    with capture_logs() as logs:
        async with srv.tcp() as c:
            r = await call(
                c,
                "POST",
                "/api/v1/requests",
                json={"type": "explode"},
                headers={"X-Request-Id": "boom-1"},
            )
    assert r.status == 500
    assert r.json == {"error": "internal error", "details": {"traceId": "boom-1"}}
    assert b"secret" not in r.body and b"Traceback" not in r.body
    errors = [x for x in logs if x["level"].name == "ERROR"]
    assert errors and errors[0]["extra"]["trace_id"] == "boom-1"
    assert errors[0]["exception"] is not None


@pytest.mark.parametrize(
    ("raw", "typ", "message", "field"),
    [
        (b'{"type": 1}', CreateBody, "invalid body: Expected `str`, got `int` at `type`", "type"),
        (b"{}", CreateBody, "invalid body: Object missing required field `type` at `type`", "type"),
        (
            b'{"jobs": [1]}',
            RetryBody,
            "invalid body: Expected `str`, got `int` at `jobs[0]`",
            "jobs[0]",
        ),
        (b"[]", CreateBody, "invalid body: Expected `object`, got `array`", ""),
    ],
)
def test_validation_error_messages(raw: bytes, typ: Any, message: str, field: str) -> None:
    with pytest.raises(msgspec.ValidationError) as exc:
        msgspec.json.decode(raw, type=typ)
    assert validation_error(exc.value) == (
        message,
        {"field": field, "message": message.split(": ", 1)[1].split(" at `")[0]},
    )


# --- fuzzing: whatever arrives, the answer is a 2xx/4xx JSON, never the catch-all 500 -------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["deploy", "noop", "nosuch", ""]) | st.text(max_size=10)},
        optional={"args": _json_values, "jobs": _json_values, "reason": _json_values},
    ).map(lambda v: json.dumps(v).encode()),
)
_ids = st.one_of(
    st.text(max_size=40), st.binary(max_size=40), st.from_regex(r"[0-9A-Z]{26}", fullmatch=True)
)
_targets = st.sampled_from(
    [
        ("POST", "/api/v1/requests"),
        ("POST", "/api/v1/requests?dryRun=true"),
        ("PUT", "/api/v1/requests/{id}/stop"),
        ("PUT", "/api/v1/requests/{id}/retry"),
        ("PUT", "/api/v1/requests/{id}/jobs/{id}/skip"),
        ("GET", "/api/v1/requests/{id}"),
        ("GET", "/api/v1/requests/{id}/log/{id}"),
        ("GET", "/api/v1/requests?state={id}&arg={id}&since={id}&limit={id}"),
        ("DELETE", "/api/v1/requests/{id}"),
    ]
)


async def test_fuzzed_requests_never_reach_the_catch_all(srv: Served) -> None:
    port = int(srv.url.rsplit(":", 1)[1])
    seen: list[int] = []

    @settings(
        max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(target=_targets, ident=_ids, body=_bodies, trace=st.text(max_size=20))
    def fuzz(target: tuple[str, str], ident: str | bytes, body: bytes, trace: str) -> None:
        method, template = target
        path = template.replace("{id}", quote(ident, safe=""))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            headers = {"X-Request-Id": quote(trace), "Content-Type": "application/json"}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        seen.append(resp.status)
        assert resp.status < 500, raw
        assert resp.getheader("X-Request-Id")
        if resp.status >= 400:
            assert json.loads(raw)["error"]

    await asyncio.to_thread(fuzz)
    assert len(seen) >= 100
