"""Every endpoint over real HTTP, on TCP (127.0.0.1:0) and on the Unix socket."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.model import JobState, RequestState
from tests.integration.fake_service import Served, call, reached, serve


def _me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
async def srv(tmp_path: Any) -> AsyncIterator[Served]:
    async with serve(str(tmp_path)) as s:
        yield s


async def _start(s: Served, type_: str = "deploy", args: dict[str, Any] | None = None) -> str:
    async with s.tcp() as c:
        r = await call(
            c, "POST", "/api/v1/requests", json={"type": type_, "args": args or {"app": "web"}}
        )
    assert r.status == 201, r.body
    return str(r.json["id"])


@pytest.mark.parametrize("via", ["tcp", "unix"])
async def test_create_returns_201_with_spin_cycle_fields(srv: Served, via: str) -> None:
    session = srv.tcp() if via == "tcp" else srv.unix()
    async with session as c:
        r = await call(
            c, "POST", "/api/v1/requests", json={"type": "deploy", "args": {"app": "web"}}
        )
    assert r.status == 201
    body = r.json
    for key in (
        "id",
        "type",
        "state",
        "user",
        "args",
        "createdAt",
        "startedAt",
        "finishedAt",
        "totalJobs",
        "finishedJobs",
    ):
        assert key in body
    assert body["type"] == "deploy" and body["state"] == "PENDING"
    assert body["args"] == {"app": "web", "env": "prod"}
    assert body["totalJobs"] == 3
    assert r.headers["location"] == f"/api/v1/requests/{body['id']}"
    assert body["user"] == ("anonymous" if via == "tcp" else _me())


async def test_idempotency_key_replays_with_200_and_conflicts_on_other_body(srv: Served) -> None:
    body = {"type": "deploy", "args": {"app": "web"}}
    async with srv.tcp() as c:
        first = await call(
            c, "POST", "/api/v1/requests", json=body, headers={"Idempotency-Key": "k-1"}
        )
        # same body, other spacing and key order: still the same request
        again = await call(
            c,
            "POST",
            "/api/v1/requests",
            data=b'{ "args": {"app":"web"},  "type": "deploy" }',
            headers={"Idempotency-Key": "k-1"},
        )
        other = await call(
            c,
            "POST",
            "/api/v1/requests",
            json={"type": "deploy", "args": {"app": "db"}},
            headers={"Idempotency-Key": "k-1"},
        )
        bad_key = await call(
            c, "POST", "/api/v1/requests", json=body, headers={"Idempotency-Key": "has space"}
        )
    assert (first.status, again.status, other.status, bad_key.status) == (201, 200, 409, 400)
    assert again.json["id"] == first.json["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(srv.service.requests) == 1


async def test_dry_run_returns_the_chain_and_starts_nothing(srv: Served) -> None:
    async with srv.tcp() as c:
        r = await call(
            c,
            "POST",
            "/api/v1/requests?dryRun=true",
            json={"type": "deploy", "args": {"app": "web"}},
        )
    assert r.status == 200
    plan = r.json
    assert [j["name"] for j in plan["jobs"]] == ["build", "push", "restart"]
    job = plan["jobs"][0]
    assert job == {
        "id": "j1",
        "name": "build",
        "type": "shell",
        "args": {"app": "web", "env": "prod"},
        "retry": 1,
        "retryWait": 2.0,
        "scope": "s1",
        "sequence": "deploy",
        "deferred": False,
        "timeout": None,
    }
    assert plan["edges"] == [["j1", "j2"], ["j2", "j3"]]
    assert srv.service.requests == {}
    assert not reached(srv.service, "create_request")


async def test_get_request_has_args_chain_and_progress(srv: Served) -> None:
    rid = await _start(srv)
    await srv.service.advance_job(rid, "j1", JobState.RUNNING)
    await srv.service.advance_job(rid, "j1", JobState.COMPLETE)
    async with srv.unix() as c:
        r = await call(c, "GET", f"/api/v1/requests/{rid}")
    assert r.status == 200
    d = r.json
    assert d["id"] == rid and d["args"]["app"] == "web"
    assert [(j["id"], j["state"], j["tries"]) for j in d["jobs"]] == [
        ("j1", "COMPLETE", 1),
        ("j2", "PENDING", 0),
        ("j3", "PENDING", 0),
    ]
    assert d["edges"] == [["j1", "j2"], ["j2", "j3"]]
    assert (d["finishedJobs"], d["totalJobs"]) == (1, 3)


async def test_find_passes_every_filter(srv: Served) -> None:
    a = await _start(srv, args={"app": "a"})
    b = await _start(srv, args={"app": "b"})
    await srv.service.set_state(b, RequestState.FAIL)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    async with srv.tcp() as c:
        everything = await call(c, "GET", "/api/v1/requests")
        failed = await call(
            c, "GET", "/api/v1/requests", params=[("state", "FAIL"), ("state", "STOPPED")]
        )
        by_arg = await call(
            c,
            "GET",
            "/api/v1/requests",
            params={"arg": "app=a", "type": "deploy", "user": "anonymous", "since": since},
        )
        page = await call(c, "GET", "/api/v1/requests", params={"limit": "1", "offset": "1"})
        future = await call(
            c, "GET", "/api/v1/requests", params={"until": "2000-01-01T00:00:00+00:00"}
        )
    assert [r["id"] for r in everything.json] == [b, a]  # newest first
    assert [r["id"] for r in failed.json] == [b]
    assert [r["id"] for r in by_arg.json] == [a]
    assert [r["id"] for r in page.json] == [a]
    assert future.json == []
    f = [c[1] for c in srv.service.calls if c[0] == "find_requests"][2]
    assert f.args == {"app": "a"} and f.type == "deploy" and f.user == "anonymous"
    assert f.since == pytest.approx(datetime.fromisoformat(since).timestamp())


@pytest.mark.parametrize(
    ("action", "setup", "status", "state"),
    [
        ("stop", None, 200, "STOPPED"),
        ("stop", RequestState.COMPLETE, 409, None),
        ("suspend", None, 200, "SUSPENDED"),
        ("suspend", RequestState.FAIL, 409, None),
        ("resume", RequestState.SUSPENDED, 200, "RUNNING"),
        ("resume", None, 409, None),
        ("retry", RequestState.FAIL, 200, "RUNNING"),
        ("retry", None, 409, None),
    ],
)
async def test_state_changes(
    srv: Served, action: str, setup: RequestState | None, status: int, state: str | None
) -> None:
    rid = await _start(srv)
    if setup is not None:
        await srv.service.set_state(rid, setup)
    async with srv.unix() as c:
        r = await call(c, "PUT", f"/api/v1/requests/{rid}/{action}")
    assert r.status == status, r.body
    if state is not None:
        assert r.json["state"] == state
        assert (action, rid, _me()) == srv.service.calls[-1][:3]
    else:
        assert "error" in r.json


async def test_retry_passes_the_jobs(srv: Served) -> None:
    rid = await _start(srv)
    await srv.service.set_state(rid, RequestState.FAIL)
    async with srv.tcp() as c:
        r = await call(c, "PUT", f"/api/v1/requests/{rid}/retry", json={"jobs": ["j2"]})
    assert r.status == 200
    assert srv.service.calls[-1] == ("retry", rid, "anonymous", ["j2"])


async def test_skip_needs_a_reason_and_passes_it(srv: Served) -> None:
    rid = await _start(srv)
    async with srv.tcp() as c:
        ok = await call(
            c, "PUT", f"/api/v1/requests/{rid}/jobs/j2/skip", json={"reason": "not needed"}
        )
        blank = await call(c, "PUT", f"/api/v1/requests/{rid}/jobs/j2/skip", json={"reason": "  "})
        empty = await call(c, "PUT", f"/api/v1/requests/{rid}/jobs/j2/skip", json={"reason": ""})
        none = await call(c, "PUT", f"/api/v1/requests/{rid}/jobs/j2/skip")
        missing_job = await call(
            c, "PUT", f"/api/v1/requests/{rid}/jobs/j9/skip", json={"reason": "x"}
        )
    assert ok.status == 200
    assert srv.service.calls[-2] == ("skip", rid, "j2", "anonymous", "not needed")
    assert (blank.status, empty.status, none.status, missing_job.status) == (400, 400, 400, 404)
    assert empty.json["details"]["field"] == "reason"


async def test_logs_every_try(srv: Served) -> None:
    rid = await _start(srv)
    svc = srv.service
    for state in (JobState.RUNNING, JobState.FAIL, JobState.RUNNING, JobState.COMPLETE):
        await svc.advance_job(rid, "j1", state)
    await svc.advance_job(rid, "j2", JobState.RUNNING)
    async with srv.tcp() as c:
        all_rows = await call(c, "GET", f"/api/v1/requests/{rid}/log")
        one = await call(c, "GET", f"/api/v1/requests/{rid}/log/j1")
    assert [(r["jobId"], r["try"], r["state"]) for r in all_rows.json] == [
        ("j1", 1, "FAIL"),
        ("j1", 2, "COMPLETE"),
        ("j2", 1, "RUNNING"),
    ]
    assert [r["try"] for r in one.json] == [1, 2]


async def test_running_lists_live_jobs_with_their_requests(srv: Served) -> None:
    rid = await _start(srv)
    await srv.service.advance_job(rid, "j1", JobState.RUNNING, status="copying 3/10")
    async with srv.tcp() as c:
        r = await call(c, "GET", "/api/v1/status/running")
    assert r.status == 200
    [job] = r.json
    assert (job["requestId"], job["jobId"], job["try"], job["status"], job["requestType"]) == (
        rid,
        "j1",
        1,
        "copying 3/10",
        "deploy",
    )


async def test_request_list_version_openapi_metrics(srv: Served) -> None:
    await _start(srv)
    async with srv.tcp() as c:
        types = await call(c, "GET", "/api/v1/request-list")
        version = await call(c, "GET", "/api/v1/version")
        doc = await call(c, "GET", "/api/v1/openapi.json")
        metrics = await call(c, "GET", "/metrics")
    deploy = next(t for t in types.json if t["name"] == "deploy")
    assert deploy["args"][0] == {
        "name": "app",
        "kind": "required",
        "desc": "the app to deploy",
        "default": None,
    }
    assert version.json == {"version": "0.0-test", "api": "v1"}
    assert doc.json["openapi"] == "3.1.0"
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert b"spind_requests_created_total 1.0" in metrics.body


async def test_health_is_503_when_not_ok(srv: Served) -> None:
    async with srv.tcp() as c:
        ok = await call(c, "GET", "/api/v1/health")
        srv.service.healthy = False
        bad = await call(c, "GET", "/api/v1/health")
    assert (ok.status, ok.json["ok"]) == (200, True)
    assert (bad.status, bad.json["ok"]) == (503, False)


async def test_shutting_down_refuses_writes_but_serves_reads(srv: Served) -> None:
    rid = await _start(srv)
    srv.service.shutting_down = True
    async with srv.tcp() as c:
        create = await call(c, "POST", "/api/v1/requests", json={"type": "noop"})
        stop = await call(c, "PUT", f"/api/v1/requests/{rid}/stop")
        skip = await call(c, "PUT", f"/api/v1/requests/{rid}/jobs/j1/skip", json={"reason": "x"})
        dry = await call(c, "POST", "/api/v1/requests?dryRun=true", json={"type": "noop"})
        read = await call(c, "GET", f"/api/v1/requests/{rid}")
        found = await call(c, "GET", "/api/v1/requests")
    assert (create.status, stop.status, skip.status) == (503, 503, 503)
    assert "shutting down" in create.json["error"]
    assert (dry.status, read.status, found.status) == (200, 200, 200)
    assert not reached(srv.service, "stop")


async def test_head_on_reads(srv: Served) -> None:
    async with srv.tcp() as c:
        r = await call(c, "HEAD", "/api/v1/version")
    assert r.status == 200 and r.body == b""


async def _post_over_socket(path: str, body: bytes, headers: dict[str, str]) -> str:
    """POST over the Unix socket with curl when it is installed, else by hand; the raw reply."""
    curl = shutil.which("curl")
    if curl is not None:
        hdr_args = [x for k, v in headers.items() for x in ("-H", f"{k}: {v}")]
        proc = await asyncio.create_subprocess_exec(
            curl,
            "-sS",
            "-i",
            "--unix-socket",
            path,
            "-X",
            "POST",
            *hdr_args,
            "--data-binary",
            body.decode(),
            "http://spind/api/v1/requests",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        return out.decode()
    reader, writer = await asyncio.open_unix_connection(path)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /api/v1/requests HTTP/1.1\r\nHost: spind\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{head}\r\n".encode()
        + body
    )
    out = await reader.read()
    writer.close()
    await writer.wait_closed()
    return out.decode()


async def test_plain_http_client_over_the_unix_socket(srv: Served) -> None:
    text = await _post_over_socket(srv.socket_path, b'{"type": "noop"}', {"X-Request-Id": "curl-1"})
    assert text.startswith("HTTP/1.1 201")
    assert "x-request-id: curl-1" in text.lower()
    assert len(srv.service.requests) == 1


async def test_every_answered_call_is_counted_by_route_template(srv: Served) -> None:
    rid = await _start(srv)
    async with srv.tcp() as c:
        await call(c, "GET", f"/api/v1/requests/{rid}")
        await call(c, "GET", "/api/v1/requests/01ARZ3NDEKTSV4RRFFQ69G5FAV")  # 404 of the service
        await call(c, "GET", "/api/v1/no/such/route")  # 404 of the router
        await call(c, "DELETE", "/api/v1/requests")  # 405 of the router
        await call(c, "POST", "/api/v1/requests", data=b"{not json")  # 400
    assert srv.service.api_calls == [
        ("POST", "/api/v1/requests", 201),
        ("GET", "/api/v1/requests/{id}", 200),
        ("GET", "/api/v1/requests/{id}", 404),
        ("GET", "unmatched", 404),
        ("DELETE", "unmatched", 405),
        ("POST", "/api/v1/requests", 400),
    ]
