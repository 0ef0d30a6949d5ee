"""The events stream: order, resume, heartbeats, the final `end`, and clean endings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from daemon.client import parse_sse
from daemon.model import JobState, RequestState
from tests.integration.fake_service import Served, call, capture_logs, eventually, serve


@pytest.fixture
async def srv(tmp_path: Any) -> AsyncIterator[Served]:
    async with serve(str(tmp_path), heartbeat=0.05) as s:
        yield s


async def _start(s: Served) -> str:
    async with s.tcp() as c:
        r = await call(c, "POST", "/api/v1/requests", json={"type": "deploy", "args": {"app": "a"}})
    return str(r.json["id"])


async def _run_to_the_end(s: Served, rid: str, final: RequestState = RequestState.COMPLETE) -> None:
    svc = s.service
    await svc.set_state(rid, RequestState.RUNNING)
    for job in ("j1", "j2", "j3"):
        await svc.advance_job(rid, job, JobState.RUNNING)
        await svc.advance_job(rid, job, JobState.COMPLETE)
    await svc.set_state(rid, final)


async def _records(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    return [(name, json.loads(data)) async for name, data in parse_sse(resp.content)]


async def test_backlog_in_order_then_end(srv: Served) -> None:
    rid = await _start(srv)
    await _run_to_the_end(srv, rid)
    async with (
        srv.tcp() as c,
        c.get(f"/api/v1/requests/{rid}/events", headers={"X-Request-Id": "sse-1"}) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["X-Request-Id"] == "sse-1"
        raw = (await r.read()).decode()
    blocks = [b for b in raw.split("\n\n") if b and not b.startswith(":")]
    seqs = [int(b.split("\n")[0].removeprefix("id: ")) for b in blocks[:-1]]
    assert seqs == sorted(seqs) and len(seqs) == 9  # PENDING, RUNNING, 3 x 2 jobs, COMPLETE
    first = blocks[0].split("\n")
    assert first[1] == "event: request"
    assert json.loads(first[2].removeprefix("data: "))["state"] == "PENDING"
    assert blocks[1].split("\n")[1] == "event: request"
    assert blocks[2].split("\n")[1] == "event: job"
    assert blocks[-1] == f'event: end\ndata: {{"requestId":"{rid}","state":"COMPLETE"}}'


async def test_live_events_arrive_as_they_happen(srv: Served) -> None:
    rid = await _start(srv)
    got: list[tuple[str, dict[str, Any]]] = []
    async with srv.unix() as c, c.get(f"/api/v1/requests/{rid}/events") as r:
        stream = parse_sse(r.content)
        got.append(await anext(stream))  # the PENDING backlog
        await srv.service.advance_job(rid, "j1", JobState.RUNNING, status="warming up")
        name, data = await anext(stream)
        assert (name, json.loads(data)["jobId"], json.loads(data)["detail"]) == (
            "job",
            "j1",
            "warming up",
        )
        await srv.service.set_state(rid, RequestState.FAIL)
        rest = [(n, json.loads(d)) async for n, d in stream]
    assert [n for n, _ in rest] == ["request", "end"]
    assert rest[-1][1]["state"] == "FAIL"


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_after_a_seq(srv: Served, how: str) -> None:
    rid = await _start(srv)
    await _run_to_the_end(srv, rid, RequestState.STOPPED)
    seqs = [e.seq for e in srv.service.events_by_request[rid]]
    after = seqs[5]
    url = f"/api/v1/requests/{rid}/events"
    kw: dict[str, Any] = (
        {"headers": {"Last-Event-ID": str(after)}}
        if how == "header"
        else {"params": {"after": str(after)}}
    )
    async with srv.tcp() as c, c.get(url, **kw) as r:
        records = await _records(r)
    assert [d["seq"] for n, d in records if n != "end"] == seqs[6:]
    assert records[-1] == ("end", {"requestId": rid, "state": "STOPPED"})


async def test_end_still_names_the_final_state_when_resumed_past_it(srv: Served) -> None:
    rid = await _start(srv)
    await _run_to_the_end(srv, rid)
    last = srv.service.events_by_request[rid][-1].seq
    async with srv.tcp() as c, c.get(f"/api/v1/requests/{rid}/events?after={last}") as r:
        assert await _records(r) == [("end", {"requestId": rid, "state": "COMPLETE"})]


async def test_heartbeats_while_nothing_happens(srv: Served) -> None:
    rid = await _start(srv)
    async with srv.tcp() as c, c.get(f"/api/v1/requests/{rid}/events") as r:
        seen: list[bytes] = []
        async for line in r.content:
            seen.append(line)
            if seen.count(b": heartbeat\n") >= 2:
                break
    assert b"event: request\n" in seen


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/v1/requests/{missing}/events", {}, 404),
        ("/api/v1/requests/nope/events", {}, 404),
        ("/api/v1/requests/{rid}/events?after=-1", {}, 400),
        ("/api/v1/requests/{rid}/events?after=x", {}, 400),
        ("/api/v1/requests/{rid}/events", {"Last-Event-ID": "12abc"}, 400),
    ],
)
async def test_stream_errors_are_json_before_the_stream(
    srv: Served, path: str, headers: dict[str, str], status: int
) -> None:
    rid = await _start(srv)
    async with srv.tcp() as c:
        r = await call(c, "GET", path.format(rid=rid, missing="0" * 26), headers=headers)
    assert r.status == status
    assert r.headers["content-type"].startswith("application/json") and r.json["error"]


async def test_client_leaving_closes_the_service_iterator(srv: Served) -> None:
    rid = await _start(srv)
    async with srv.tcp() as c, c.get(f"/api/v1/requests/{rid}/events") as r:
        await anext(parse_sse(r.content))
        assert srv.service.open_streams == 1
    await eventually(lambda: srv.service.open_streams == 0)


async def test_shutdown_ends_open_streams_without_end(tmp_path: Any) -> None:
    with capture_logs() as logs:
        async with serve(str(tmp_path)) as s:  # default 15 s heartbeat: only `stop` ends it
            rid = await _start(s)
            async with s.tcp() as c, c.get(f"/api/v1/requests/{rid}/events") as r:
                first = await anext(parse_sse(r.content))
                await s.runner.cleanup()
                rest = await r.content.read()
    assert first[0] == "request"
    assert b"event: end" not in rest
    assert s.service.open_streams == 0
    events_line = [
        x
        for x in logs
        if x["extra"].get("action") == "http_access" and x["extra"]["path"].endswith("/events")
    ]
    assert [x["extra"]["status"] for x in events_line] == [200]  # ended by the stop, not cancelled


async def test_many_concurrent_watchers_all_get_the_end(srv: Served) -> None:
    rid = await _start(srv)

    async def watch() -> list[str]:
        async with srv.tcp() as c, c.get(f"/api/v1/requests/{rid}/events") as r:
            return [n for n, _ in await _records(r)]

    watchers = [asyncio.create_task(watch()) for _ in range(20)]
    await eventually(lambda: srv.service.open_streams == 20)
    await _run_to_the_end(srv, rid)
    results = await asyncio.gather(*watchers)
    assert [(r[-1], len(r)) for r in results] == [("end", 10)] * 20


async def test_head_is_not_allowed_on_a_stream(srv: Served) -> None:
    rid = await _start(srv)
    async with srv.tcp() as c:
        r = await call(c, "HEAD", f"/api/v1/requests/{rid}/events")
    assert r.status == 405 and r.headers["allow"] == "GET"
