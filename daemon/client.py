"""A client for spind's control API, over the Unix socket or a URL (async, with a sync facade).

Every call decodes the response into the same msgspec types the server encodes; an error
response raises :class:`ApiError` with the API's message, details and trace id, and a daemon
that cannot be reached raises :class:`ConnectError`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from daemon import __version__
from daemon.api.sse import EndView
from daemon.api.wire import ErrorBody, PlanView, ProbeHealthView, VersionView
from daemon.model import (
    Event,
    HealthView,
    JobLogRow,
    RequestDetail,
    RequestTypeView,
    RequestView,
    RunningJob,
)

T = TypeVar("T")
PREFIX = "/api/v1"


class ClientError(Exception):
    """Talking to spind failed."""

    def __init__(self, message: str, *, trace_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.trace_id = trace_id


class ConnectError(ClientError):
    """spind could not be reached (not running, wrong socket or URL)."""


class ApiError(ClientError):
    """spind answered with an error status."""

    def __init__(self, status: int, message: str, details: Any = None, trace_id: str = "") -> None:
        super().__init__(message, trace_id=trace_id)
        self.status = status
        self.details = details


def _q(segment: str) -> str:
    return quote(segment, safe="")


class Client:
    """`async with Client(socket_path=...) as c: await c.get(rid)`; or `url=` (+ `token=`)."""

    def __init__(
        self,
        *,
        socket_path: str | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        trace_id: str | None = None,
    ) -> None:
        if (socket_path is None) == (url is None):
            raise ValueError("give exactly one of socket_path and url")
        self.where = url or f"unix:{socket_path}"
        self.trace_id = trace_id or uuid.uuid4().hex
        self._timeout = timeout
        headers = {"User-Agent": f"spind-client/{__version__}", "X-Request-Id": self.trace_id}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        self._socket_path = socket_path
        self._base = (url or "http://spind").rstrip("/")
        self._client: aiohttp.ClientSession | None = None

    @property
    def _session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the running loop."""
        if self._client is None:
            connector: aiohttp.BaseConnector | None = None
            if self._socket_path is not None:
                connector = aiohttp.UnixConnector(path=self._socket_path)
            self._client = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # --- transport ---------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> tuple[int, bytes]:
        data = msgspec.json.encode(body) if body is not None else None
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method,
                self._base + path,
                data=data,
                params=params,
                headers=hdrs,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400 and resp.status not in accept:
                    raise self._error(resp, raw)
                return resp.status, raw
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise ConnectError(
                f"cannot reach spind at {self.where}: {exc or type(exc).__name__}",
                trace_id=self.trace_id,
            ) from exc

    def _error(self, resp: aiohttp.ClientResponse, raw: bytes) -> ApiError:
        tid = resp.headers.get("X-Request-Id", self.trace_id)
        try:
            err = msgspec.json.decode(raw, type=ErrorBody)
        except msgspec.DecodeError:
            text = raw.decode("utf-8", "replace").strip()[:500]
            return ApiError(resp.status, text or resp.reason or "error", None, tid)
        return ApiError(resp.status, err.error, err.details, tid)

    async def _get(self, path: str, typ: type[T], params: list[tuple[str, str]] | None = None) -> T:
        _, raw = await self._send("GET", path, params=params)
        return msgspec.json.decode(raw, type=typ)

    async def _put(self, path: str, body: Any = None) -> RequestView:
        _, raw = await self._send("PUT", path, body=body)
        return msgspec.json.decode(raw, type=RequestView)

    # --- endpoints ---------------------------------------------------------------------

    async def create(
        self, type: str, args: dict[str, Any], *, idempotency_key: str | None = None
    ) -> tuple[RequestView, bool]:
        """(request, created); created is False when the server replayed an idempotency key."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        status, raw = await self._send(
            "POST", f"{PREFIX}/requests", body={"type": type, "args": args}, headers=headers
        )
        return msgspec.json.decode(raw, type=RequestView), status == 201

    async def plan(self, type: str, args: dict[str, Any]) -> PlanView:
        _, raw = await self._send(
            "POST",
            f"{PREFIX}/requests",
            body={"type": type, "args": args},
            params=[("dryRun", "true")],
        )
        return msgspec.json.decode(raw, type=PlanView)

    async def get(self, request_id: str) -> RequestDetail:
        return await self._get(f"{PREFIX}/requests/{_q(request_id)}", RequestDetail)

    async def find(
        self,
        *,
        type: str = "",
        user: str = "",
        states: list[str] | None = None,
        args: dict[str, str] | None = None,
        since: str = "",
        until: str = "",
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[RequestView]:
        """Requests, newest first; since/until are RFC 3339 times."""
        params = [("type", type), ("user", user), ("since", since), ("until", until)]
        params = [(k, v) for k, v in params if v]
        params += [("state", s) for s in states or []]
        params += [("arg", f"{k}={v}") for k, v in (args or {}).items()]
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset is not None:
            params.append(("offset", str(offset)))
        return await self._get(f"{PREFIX}/requests", list[RequestView], params)

    async def stop(self, request_id: str) -> RequestView:
        return await self._put(f"{PREFIX}/requests/{_q(request_id)}/stop")

    async def suspend(self, request_id: str) -> RequestView:
        return await self._put(f"{PREFIX}/requests/{_q(request_id)}/suspend")

    async def resume(self, request_id: str) -> RequestView:
        return await self._put(f"{PREFIX}/requests/{_q(request_id)}/resume")

    async def retry(self, request_id: str, jobs: list[str] | None = None) -> RequestView:
        body = {"jobs": jobs} if jobs else None
        return await self._put(f"{PREFIX}/requests/{_q(request_id)}/retry", body)

    async def skip(self, request_id: str, job_id: str, reason: str) -> RequestView:
        path = f"{PREFIX}/requests/{_q(request_id)}/jobs/{_q(job_id)}/skip"
        return await self._put(path, {"reason": reason})

    async def log(self, request_id: str, job_id: str | None = None) -> list[JobLogRow]:
        path = f"{PREFIX}/requests/{_q(request_id)}/log"
        if job_id is not None:
            path += f"/{_q(job_id)}"
        return await self._get(path, list[JobLogRow])

    async def running(self) -> list[RunningJob]:
        return await self._get(f"{PREFIX}/status/running", list[RunningJob])

    async def request_types(self) -> list[RequestTypeView]:
        return await self._get(f"{PREFIX}/request-list", list[RequestTypeView])

    async def version(self) -> VersionView:
        return await self._get(f"{PREFIX}/version", VersionView)

    async def health(self) -> HealthView | ProbeHealthView:
        """The health view, also when it says not ok (a 503): the full HealthView, or, for a
        TCP caller without a token when auth is on, the short ProbeHealthView (ok, reason)."""
        _, raw = await self._send("GET", f"{PREFIX}/health", accept=(503,))
        return decode_health(raw)

    async def events(
        self, request_id: str, after: int = 0, *, read_timeout: float = 90.0
    ) -> AsyncIterator[Event | EndView]:
        """The request's events after seq `after`, then an EndView once it finished. The
        iterator also ends (without EndView) when the daemon closes the stream."""
        path = f"{PREFIX}/requests/{_q(request_id)}/events"
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = str(after)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=read_timeout)
        try:
            async with self._session.get(
                self._base + path, headers=headers, timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    raise self._error(resp, await resp.read())
                async for name, data in parse_sse(resp.content):
                    if name == "end":
                        yield msgspec.json.decode(data, type=EndView)
                        return
                    if name in ("request", "job"):
                        yield msgspec.json.decode(data, type=Event)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ConnectError(
                f"lost the event stream from {self.where}: {exc or type(exc).__name__}",
                trace_id=self.trace_id,
            ) from exc


def decode_health(raw: bytes) -> HealthView | ProbeHealthView:
    """Either health body. msgspec cannot tell two untagged Structs apart in one union, but
    these two are disjoint: the full view requires `journalWritable` and `loopLagMs`, the probe
    view forbids any field beyond `ok` and `reason`."""
    try:
        return msgspec.json.decode(raw, type=HealthView)
    except msgspec.ValidationError as not_full:
        try:
            return msgspec.json.decode(raw, type=ProbeHealthView)
        except msgspec.ValidationError:
            raise not_full from None  # neither: say what the full view lacks


async def parse_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """SSE records as (event name, data); comments and `id`/`retry` fields are skipped (the
    data carries the seq)."""
    name, data = "message", bytearray()
    has_data = False
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if has_data:
                yield name, bytes(data)
            name, data, has_data = "message", bytearray(), False
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            if has_data:
                data += b"\n"
            data += value
            has_data = True


class SyncClient:
    """The same calls, blocking: each runs the async client in a fresh event loop."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs

    def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        async def run() -> T:
            async with Client(**self._kwargs) as client:
                return await fn(client)

        return asyncio.run(run())

    def create(self, type: str, args: dict[str, Any], **kw: Any) -> tuple[RequestView, bool]:
        return self.call(lambda c: c.create(type, args, **kw))

    def plan(self, type: str, args: dict[str, Any]) -> PlanView:
        return self.call(lambda c: c.plan(type, args))

    def get(self, request_id: str) -> RequestDetail:
        return self.call(lambda c: c.get(request_id))

    def find(self, **kw: Any) -> list[RequestView]:
        return self.call(lambda c: c.find(**kw))

    def stop(self, request_id: str) -> RequestView:
        return self.call(lambda c: c.stop(request_id))

    def suspend(self, request_id: str) -> RequestView:
        return self.call(lambda c: c.suspend(request_id))

    def resume(self, request_id: str) -> RequestView:
        return self.call(lambda c: c.resume(request_id))

    def retry(self, request_id: str, jobs: list[str] | None = None) -> RequestView:
        return self.call(lambda c: c.retry(request_id, jobs))

    def skip(self, request_id: str, job_id: str, reason: str) -> RequestView:
        return self.call(lambda c: c.skip(request_id, job_id, reason))

    def log(self, request_id: str, job_id: str | None = None) -> list[JobLogRow]:
        return self.call(lambda c: c.log(request_id, job_id))

    def running(self) -> list[RunningJob]:
        return self.call(lambda c: c.running())

    def request_types(self) -> list[RequestTypeView]:
        return self.call(lambda c: c.request_types())

    def version(self) -> VersionView:
        return self.call(lambda c: c.version())

    def health(self) -> HealthView | ProbeHealthView:
        return self.call(lambda c: c.health())
