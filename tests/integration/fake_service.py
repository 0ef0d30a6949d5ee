"""A test double of ControlService (in memory, no runtime), and a harness serving it for real.

The fake keeps requests, events and job logs in dicts and lets a test drive jobs and requests
through their states (`advance_job`, `set_state`). It records every call in `calls`, so tests can
check that bad input never reached the service. The harness runs the real aiohttp app on
127.0.0.1 port 0 and on a Unix socket in a temporary directory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import prometheus_client
from aiohttp import web
from loguru import logger

from daemon.api import AuthSettings, FindFilter, make_app, start_sites, tcp_port
from daemon.chain import Chain, ChainJob, Scope
from daemon.errors import ArgError, BadRequest, Conflict, NotFound
from daemon.model import (
    ArgView,
    Event,
    HealthView,
    JobLogRow,
    JobState,
    JobView,
    RequestDetail,
    RequestState,
    RequestTypeView,
    RequestView,
    RunningJob,
    now_utc,
)
from daemon.spec import ACL

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid() -> str:
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@dataclass
class FakeType:
    name: str
    jobs: list[str]
    required: list[str] = field(default_factory=list)
    optional: dict[str, str] = field(default_factory=dict)
    acl: list[ACL] = field(default_factory=list)
    desc: str = ""
    arg_desc: dict[str, str] = field(default_factory=dict)


def default_types() -> dict[str, FakeType]:
    return {
        t.name: t
        for t in (
            FakeType(
                "deploy",
                ["build", "push", "restart"],
                required=["app"],
                optional={"env": "prod"},
                acl=[
                    ACL(role="deployers", ops=["start", "stop"]),
                    ACL(role="starters", ops=["start"]),
                    ACL(role="owners", admin=True),
                ],
                desc="Deploy an app",
                arg_desc={"app": "the app to deploy", "env": "where"},
            ),
            FakeType("noop", ["nothing"], desc="Does nothing"),
            FakeType("explode", ["boom"], desc="The fake raises an unexpected error"),
        )
    }


class FakeService:
    """In-memory ControlService for API tests."""

    def __init__(self, types: dict[str, FakeType] | None = None) -> None:
        self.types = types if types is not None else default_types()
        self.shutting_down = False
        self.version = "0.0-test"
        self.healthy = True
        self.requests: dict[str, RequestDetail] = {}
        self.events_by_request: dict[str, list[Event]] = {}
        self.logs: dict[str, list[JobLogRow]] = {}
        self.idempotency: dict[str, tuple[str, str]] = {}
        self.calls: list[tuple[Any, ...]] = []
        #: (method, route template, status) of every answered HTTP call
        self.api_calls: list[tuple[str, str, int]] = []
        self.seq = 0
        self.open_streams = 0
        self._changed = asyncio.Condition()
        self.registry = prometheus_client.CollectorRegistry()
        self.created_total = prometheus_client.Counter(
            "spind_requests_created", "Requests created", registry=self.registry
        )

    # --- helpers for tests -------------------------------------------------------------

    async def _emit(
        self,
        rid: str,
        kind: str,
        state: str,
        job_id: str | None = None,
        try_: int | None = None,
        detail: str = "",
    ) -> None:
        self.seq += 1
        ev = Event(
            seq=self.seq,
            request_id=rid,
            kind=kind,
            state=state,
            at=now_utc(),
            job_id=job_id,
            try_=try_,
            detail=detail,
        )
        self.events_by_request.setdefault(rid, []).append(ev)
        async with self._changed:
            self._changed.notify_all()

    def _job(self, rid: str, job_id: str) -> JobView:
        for job in self._get(rid).jobs:
            if job.id == job_id:
                return job
        raise NotFound(f"no job {job_id} in request {rid}")

    async def advance_job(self, rid: str, job_id: str, state: JobState, status: str = "") -> None:
        req = self._get(rid)
        job = self._job(rid, job_id)
        if state == JobState.RUNNING:
            job.tries += 1
            self.logs.setdefault(rid, []).append(
                JobLogRow(
                    request_id=rid,
                    job_id=job_id,
                    name=job.name,
                    type=job.type,
                    try_=job.tries,
                    state=JobState.RUNNING,
                    started_at=now_utc(),
                )
            )
        else:
            for row in self.logs.get(rid, []):
                if row.job_id == job_id and row.try_ == job.tries:
                    row.state = state
                    row.finished_at = now_utc()
                    row.exit = 0 if state == JobState.COMPLETE else 1
        job.state = state
        job.status = status
        req.finished_jobs = sum(1 for j in req.jobs if j.state.done)
        await self._emit(rid, "job", state.value, job_id, job.tries, status)

    async def set_state(self, rid: str, state: RequestState) -> RequestView:
        req = self._get(rid)
        req.state = state
        if state == RequestState.RUNNING and req.started_at is None:
            req.started_at = now_utc()
        if state.finished:
            req.finished_at = now_utc()
        await self._emit(rid, "request", state.value)
        return self._view(req)

    def _get(self, rid: str) -> RequestDetail:
        try:
            return self.requests[rid]
        except KeyError:
            raise NotFound(f"no such request: {rid}") from None

    @staticmethod
    def _view(req: RequestDetail) -> RequestView:
        fields = {f: getattr(req, f) for f in RequestView.__struct_fields__}
        return RequestView(**fields)

    def _check_args(self, t: FakeType, args: dict[str, Any]) -> dict[str, Any]:
        for name in t.required:
            if name not in args:
                raise ArgError(f"missing required arg {name!r}", {"arg": name})
        for name, value in args.items():
            if name not in t.required and name not in t.optional:
                raise ArgError(f"unknown arg {name!r}", {"arg": name})
            if not isinstance(value, str):
                raise ArgError(f"arg {name!r} must be a string", {"arg": name})
        return {**t.optional, **args}

    def _type(self, name: str) -> FakeType:
        if name == "explode":
            raise RuntimeError("secret-internal-detail: the fake blew up")
        t = self.types.get(name)
        if t is None:
            raise BadRequest(f"unknown request type {name!r}")
        return t

    # --- ControlService ------------------------------------------------------------------

    async def create_request(
        self,
        *,
        type: str,
        args: dict[str, Any],
        user: str,
        trace_id: str,
        idempotency_key: str | None,
        body_hash: str,
    ) -> tuple[RequestView, bool]:
        self.calls.append(("create_request", type, user, trace_id, idempotency_key))
        if idempotency_key is not None and idempotency_key in self.idempotency:
            first_hash, rid = self.idempotency[idempotency_key]
            if first_hash != body_hash:
                raise Conflict("Idempotency-Key reused with another body")
            return self._view(self.requests[rid]), False
        t = self._type(type)
        full = self._check_args(t, args)
        rid = new_ulid()
        jobs = [
            JobView(id=f"j{i + 1}", name=n, type="shell", state=JobState.PENDING, sequence_id="s1")
            for i, n in enumerate(t.jobs)
        ]
        self.requests[rid] = RequestDetail(
            id=rid,
            type=type,
            state=RequestState.PENDING,
            user=user,
            args=full,
            created_at=now_utc(),
            total_jobs=len(jobs),
            trace_id=trace_id,
            jobs=jobs,
            edges=[(a.id, b.id) for a, b in itertools.pairwise(jobs)],
        )
        if idempotency_key is not None:
            self.idempotency[idempotency_key] = (body_hash, rid)
        self.created_total.inc()
        await self._emit(rid, "request", RequestState.PENDING.value)
        return self._view(self.requests[rid]), True

    async def plan(self, *, type: str, args: dict[str, Any]) -> Chain:
        self.calls.append(("plan", type))
        t = self._type(type)
        full = self._check_args(t, args)
        jobs = {
            f"j{i + 1}": ChainJob(
                id=f"j{i + 1}",
                name=n,
                type="shell",
                scope="s1",
                args=dict(full),
                retry=1,
                retry_wait=2.0,
            )
            for i, n in enumerate(t.jobs)
        }
        ids = list(jobs)
        return Chain(
            request_type=type,
            args=full,
            jobs=jobs,
            edges=list(itertools.pairwise(ids)),
            scopes={"s1": Scope(id="s1", sequence=type)},
        )

    async def get_request(self, request_id: str) -> RequestDetail:
        self.calls.append(("get_request", request_id))
        return self._get(request_id)

    async def find_requests(self, f: FindFilter) -> list[RequestView]:
        self.calls.append(("find_requests", f))
        out = []
        for req in sorted(self.requests.values(), key=lambda r: r.created_at, reverse=True):
            created = req.created_at.timestamp()
            if (f.type and req.type != f.type) or (f.user and req.user != f.user):
                continue
            if f.states and req.state not in f.states:
                continue
            if any(req.args.get(k) != v for k, v in f.args.items()):
                continue
            if (f.since is not None and created < f.since) or (
                f.until is not None and created >= f.until
            ):
                continue
            out.append(self._view(req))
        return out[f.offset : f.offset + f.limit]

    async def stop(self, request_id: str, *, user: str) -> RequestView:
        self.calls.append(("stop", request_id, user))
        if self._get(request_id).state.finished:
            raise Conflict("request already finished")
        return await self.set_state(request_id, RequestState.STOPPED)

    async def suspend(self, request_id: str, *, user: str) -> RequestView:
        self.calls.append(("suspend", request_id, user))
        if self._get(request_id).state not in (RequestState.RUNNING, RequestState.PENDING):
            raise Conflict("only running or pending requests can be suspended")
        return await self.set_state(request_id, RequestState.SUSPENDED)

    async def resume(self, request_id: str, *, user: str) -> RequestView:
        self.calls.append(("resume", request_id, user))
        if self._get(request_id).state != RequestState.SUSPENDED:
            raise Conflict("only suspended requests can be resumed")
        return await self.set_state(request_id, RequestState.RUNNING)

    async def retry(self, request_id: str, *, user: str, jobs: list[str] | None) -> RequestView:
        self.calls.append(("retry", request_id, user, jobs))
        req = self._get(request_id)
        if req.state not in (RequestState.FAIL, RequestState.STOPPED, RequestState.SUSPENDED):
            raise Conflict("only failed, stopped or held requests can be retried")
        for jid in jobs or []:
            self._job(request_id, jid)
        return await self.set_state(request_id, RequestState.RUNNING)

    async def skip(self, request_id: str, job_id: str, *, user: str, reason: str) -> RequestView:
        self.calls.append(("skip", request_id, job_id, user, reason))
        await self.advance_job(request_id, job_id, JobState.SKIPPED, reason)
        return self._view(self._get(request_id))

    async def job_log(self, request_id: str, job_id: str | None) -> list[JobLogRow]:
        self.calls.append(("job_log", request_id, job_id))
        self._get(request_id)
        if job_id is not None:
            self._job(request_id, job_id)
        return [r for r in self.logs.get(request_id, []) if job_id in (None, r.job_id)]

    async def events(self, request_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        self.calls.append(("events", request_id, after_seq))
        self._get(request_id)
        sent = after_seq
        self.open_streams += 1
        try:
            while True:
                # read `finished` first: the final event is journaled before the state is seen
                finished = self.requests[request_id].state.finished
                for ev in list(self.events_by_request.get(request_id, [])):
                    if ev.seq > sent:
                        sent = ev.seq
                        yield ev
                if finished:
                    return
                if any(ev.seq > sent for ev in self.events_by_request.get(request_id, [])):
                    continue  # more came in while we were yielding
                async with self._changed:
                    await self._changed.wait()
        finally:
            self.open_streams -= 1

    def running(self) -> list[RunningJob]:
        self.calls.append(("running",))
        return [
            RunningJob(
                request_id=r.id,
                job_id=j.id,
                name=j.name,
                type=j.type,
                try_=j.tries,
                started_at=now_utc(),
                status=j.status,
                request_type=r.type,
                user=r.user,
            )
            for r in self.requests.values()
            for j in r.jobs
            if j.state == JobState.RUNNING
        ]

    def request_types(self) -> list[RequestTypeView]:
        self.calls.append(("request_types",))
        return [
            RequestTypeView(
                name=t.name,
                desc=t.desc,
                args=[
                    ArgView(name=a, kind="required", desc=t.arg_desc.get(a, "")) for a in t.required
                ]
                + [
                    ArgView(name=a, kind="optional", desc=t.arg_desc.get(a, ""), default=d)
                    for a, d in t.optional.items()
                ],
            )
            for t in self.types.values()
        ]

    def request_type_acl(self, type: str) -> list[ACL] | None:
        t = self.types.get(type)
        return None if t is None else list(t.acl)

    async def request_type_of(self, request_id: str) -> str:
        return self._get(request_id).type

    def health(self) -> HealthView:
        self.calls.append(("health",))
        return HealthView(
            ok=self.healthy,
            journal_writable=self.healthy,
            loop_lag_ms=0.5,
            shutting_down=self.shutting_down,
        )

    def api_call(self, method: str, route: str, status: int) -> None:
        self.api_calls.append((method, route, status))

    def metrics(self) -> tuple[bytes, str]:
        self.calls.append(("metrics",))
        return prometheus_client.generate_latest(
            self.registry
        ), prometheus_client.CONTENT_TYPE_LATEST


def reached(service: FakeService, name: str) -> bool:
    """Whether any call of `name` reached the service."""
    return any(c[0] == name for c in service.calls)


@dataclass
class Served:
    service: FakeService
    runner: web.AppRunner
    url: str
    socket_path: str

    def tcp(self, **headers: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.url, headers=headers)

    def unix(self, **headers: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            "http://spind",
            connector=aiohttp.UnixConnector(path=self.socket_path),
            headers=headers,
        )


@asynccontextmanager
async def short_dir(tmp_dir: str) -> AsyncIterator[str]:
    """`tmp_dir`, or a short one: a Unix socket path must fit in 108 bytes."""
    if len(tmp_dir) < 90:
        yield tmp_dir
        return
    with tempfile.TemporaryDirectory(prefix="spind-", dir="/tmp") as d:
        yield d


@asynccontextmanager
async def serve(
    tmp_dir: str,
    service: FakeService | None = None,
    *,
    auth: AuthSettings | None = None,
    max_body_bytes: int = 64 * 1024,
    heartbeat: float = 15.0,
) -> AsyncIterator[Served]:
    """The real app on 127.0.0.1:0 and a Unix socket in `tmp_dir`."""
    service = service if service is not None else FakeService()
    app = make_app(
        service, auth=auth or AuthSettings(), max_body_bytes=max_body_bytes, heartbeat=heartbeat
    )
    async with short_dir(tmp_dir) as d:
        sock = os.path.join(d, "spind.sock")
        runner = await start_sites(app, listen="127.0.0.1:0", socket_path=sock)
        try:
            yield Served(service, runner, f"http://127.0.0.1:{tcp_port(runner)}", sock)
        finally:
            await runner.cleanup()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


async def call(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> Reply:
    async with session.request(method, path, **kw) as resp:
        body = await resp.read()
        headers = {k.lower(): v for k, v in resp.headers.items()}
        return Reply(resp.status, headers, body)


async def raw_http(port: int, data: bytes) -> Reply:
    """Send raw bytes (anything a client library would refuse) and read the whole reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k:
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        else:
            body = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return Reply(int(lines[0].split()[1]), headers, body)


@contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """Every loguru record logged inside the block."""
    records: list[dict[str, Any]] = []
    handler = logger.add(lambda m: records.append(dict(m.record)), level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(handler)


async def eventually(check: Any, timeout: float = 5.0) -> None:
    """Wait until `check()` is true (polling); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
