"""The endpoints: thin handlers over one ControlService call each, and the table that lists them.

Each handler validates what it reads (ids, query, body) before the service sees anything, checks
the caller's permission, calls the service once and encodes the result. The table `ROUTES` is
also what :mod:`daemon.api.openapi` documents, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from multidict import MultiMapping

from daemon.api import sse
from daemon.api.auth import IDENTITY, Op, api_settings, authenticated, check
from daemon.api.protocol import ControlService, FindFilter
from daemon.api.trace import trace_id_of
from daemon.api.wire import (
    CreateBody,
    PlanView,
    ProbeHealthView,
    RetryBody,
    SkipBody,
    VersionView,
    plan_view,
    probe_health,
)
from daemon.errors import BadRequest, NotFound, PayloadTooLarge, Unavailable
from daemon.model import (
    HealthView,
    JobLogRow,
    RequestDetail,
    RequestState,
    RequestTypeView,
    RequestView,
    RunningJob,
)

SERVICE: web.AppKey[ControlService] = web.AppKey("service")
HEARTBEAT = web.AppKey("heartbeat", float)
STREAMS_STOP = web.AppKey("streams_stop", sse.StreamsStop)
OPENAPI = web.AppKey("openapi", bytes)

PREFIX = "/api/v1"
REQUEST_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
JOB_ID = re.compile(r"j[0-9]{1,9}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_UINT = re.compile(r"[0-9]{1,19}")  # then range-checked: 10**18 has 19 digits
_FIND_PARAMS = frozenset({"type", "user", "state", "arg", "since", "until", "limit", "offset"})
MAX_LIMIT = 1000

_encoder = msgspec.json.Encoder()
_create_decoder = msgspec.json.Decoder(CreateBody)
_retry_decoder = msgspec.json.Decoder(RetryBody)
_skip_decoder = msgspec.json.Decoder(SkipBody)

B = TypeVar("B")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- small helpers -------------------------------------------------------------------------


def _svc(request: web.Request) -> ControlService:
    return request.app[SERVICE]


def _user(request: web.Request) -> str:
    return request[IDENTITY].user


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encoder.encode(obj), content_type="application/json", headers=headers
    )


def _short(text: str) -> str:
    return text if len(text) <= 64 else text[:64] + "..."


def request_id_of(request: web.Request) -> str:
    rid = request.match_info["id"]
    if not REQUEST_ID.fullmatch(rid):
        raise NotFound("no such request (not a request id)", {"id": _short(rid)})
    return rid


def job_id_of(request: web.Request) -> str:
    jid = request.match_info["job_id"]
    if not JOB_ID.fullmatch(jid):
        raise NotFound("no such job (not a job id)", {"jobId": _short(jid)})
    return jid


def _writable(request: web.Request) -> None:
    if _svc(request).shutting_down:
        raise Unavailable("spind is shutting down; writes are refused, reads still work")


async def _body(request: web.Request, decoder: msgspec.json.Decoder[B]) -> B | None:
    """The decoded body, or None when there is none. Too large: 413, before reading it when
    the length is announced, else as soon as more than the limit has arrived."""
    limit = api_settings(request).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes", {"maxBytes": limit})
    raw = bytearray()
    async for chunk in request.content.iter_any():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes", {"maxBytes": limit})
    if not raw.strip():
        return None
    try:
        return decoder.decode(raw)
    except RecursionError:  # msgspec's answer to deep nesting ([[[[...]]]])
        raise BadRequest("malformed JSON body: nested too deeply") from None


def _required(body: B | None) -> B:
    if body is None:
        raise BadRequest("a JSON body is required")
    return body


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"query parameter {name!r} given more than once")
    return values[0] if values else None


def _flag(query: MultiMapping[str], name: str) -> bool:
    value = _single(query, name)
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise BadRequest(f"query parameter {name!r} must be true or false")


def _uint(name: str, value: str, *, lo: int = 0, hi: int = 10**18) -> int:
    if not _UINT.fullmatch(value) or not lo <= int(value) <= hi:
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}", {"value": _short(value)})
    return int(value)


def parse_time(name: str, value: str) -> float:
    """An RFC 3339 time (with offset or Z) as epoch seconds."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise BadRequest(
            f"{name} must be an RFC 3339 time with an offset, e.g. 2024-05-01T12:00:00Z",
            {"value": _short(value)},
        )
    return when.timestamp()


def parse_find(query: MultiMapping[str]) -> FindFilter:
    """`GET /api/v1/requests` query -> FindFilter; anything odd is a 400 naming the parameter."""
    unknown = sorted(set(query) - _FIND_PARAMS)
    if unknown:
        raise BadRequest(
            f"unknown query parameter {_short(unknown[0])!r}", {"allowed": sorted(_FIND_PARAMS)}
        )
    states: list[RequestState] = []
    for raw in query.getall("state", []):
        if not raw.strip(" ,"):
            raise BadRequest("state must not be empty", {"allowed": list(RequestState)})
        for part in filter(None, (p.strip().upper() for p in raw.split(","))):
            if part not in RequestState.__members__:
                raise BadRequest(f"unknown state {_short(part)!r}", {"allowed": list(RequestState)})
            states.append(RequestState(part))
    args: dict[str, str] = {}
    for raw in query.getall("arg", []):
        key, eq, value = raw.partition("=")
        if not eq or not key:
            raise BadRequest("arg must be key=value", {"value": _short(raw)})
        args[key] = value
    since, until = _single(query, "since"), _single(query, "until")
    limit, offset = _single(query, "limit"), _single(query, "offset")
    return FindFilter(
        type=_single(query, "type") or "",
        user=_single(query, "user") or "",
        states=states,
        args=args,
        since=parse_time("since", since) if since is not None else None,
        until=parse_time("until", until) if until is not None else None,
        limit=_uint("limit", limit, lo=1, hi=MAX_LIMIT) if limit is not None else 100,
        offset=_uint("offset", offset, hi=10**9) if offset is not None else 0,
    )


def body_hash(body: CreateBody) -> str:
    """The same request body gives the same hash, however its JSON was spaced or ordered."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


async def _may_change(request: web.Request, rid: str) -> None:
    """Stop, suspend, resume, retry and skip need `stop` on the request's type."""
    if not api_settings(request).auth.enabled:
        return
    svc = _svc(request)
    rtype = await svc.request_type_of(rid)
    check(
        request, Op.STOP, svc.request_type_acl(rtype), f"stop or change requests of type {rtype!r}"
    )


# --- handlers ------------------------------------------------------------------------------


async def create_request(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - {"dryRun"})
    if unknown:
        raise BadRequest(f"unknown query parameter {_short(unknown[0])!r}", {"allowed": ["dryRun"]})
    dry_run = _flag(request.query, "dryRun")
    if not dry_run:
        _writable(request)
    raw: CreateBody | None = await _body(request, _create_decoder)
    body = _required(raw)
    svc = _svc(request)
    acl = svc.request_type_acl(body.type)
    if acl is not None:  # an unknown type is the service's 400
        check(request, Op.START, acl, f"start requests of type {body.type!r}")
    if dry_run:
        return _json(plan_view(await svc.plan(type=body.type, args=body.args)))
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1-255 printable ASCII characters")
    view, created = await svc.create_request(
        type=body.type,
        args=body.args,
        user=_user(request),
        trace_id=trace_id_of(request),
        idempotency_key=key,
        body_hash=body_hash(body),
    )
    headers = {"Location": f"{PREFIX}/requests/{view.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _json(view, 201 if created else 200, headers)


async def get_request(request: web.Request) -> web.Response:
    return _json(await _svc(request).get_request(request_id_of(request)))


async def find_requests(request: web.Request) -> web.Response:
    return _json(await _svc(request).find_requests(parse_find(request.query)))


def _change(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        rid = request_id_of(request)
        _writable(request)
        await _may_change(request, rid)
        method = getattr(_svc(request), name)
        return _json(await method(rid, user=_user(request)))

    handler.__name__ = name
    return handler


async def retry(request: web.Request) -> web.Response:
    rid = request_id_of(request)
    _writable(request)
    body = await _body(request, _retry_decoder)
    await _may_change(request, rid)
    jobs = body.jobs if body is not None else None
    return _json(await _svc(request).retry(rid, user=_user(request), jobs=jobs))


async def skip(request: web.Request) -> web.Response:
    rid, jid = request_id_of(request), job_id_of(request)
    _writable(request)
    raw: SkipBody | None = await _body(request, _skip_decoder)
    body = _required(raw)
    if not body.reason.strip():
        raise BadRequest("invalid body: reason must not be blank", {"field": "reason"})
    await _may_change(request, rid)
    view = await _svc(request).skip(rid, jid, user=_user(request), reason=body.reason)
    return _json(view)


async def request_log(request: web.Request) -> web.Response:
    return _json(await _svc(request).job_log(request_id_of(request), None))


async def job_log(request: web.Request) -> web.Response:
    rid, jid = request_id_of(request), job_id_of(request)
    return _json(await _svc(request).job_log(rid, jid))


async def events(request: web.Request) -> web.StreamResponse:
    rid = request_id_of(request)
    header = request.headers.get("Last-Event-ID")
    after_q = _single(request.query, "after")
    after = 0
    if header is not None and header.strip():
        after = _uint("Last-Event-ID", header.strip())
    elif after_q is not None:
        after = _uint("after", after_q)
    svc = _svc(request)
    await svc.request_type_of(rid)  # a 404 now, not an empty stream

    async def final_state() -> str:
        return (await svc.get_request(rid)).state.value

    return await sse.stream(
        request,
        rid,
        svc.events(rid, after),
        heartbeat=request.app[HEARTBEAT],
        stop=request.app[STREAMS_STOP],
        final_state=final_state,
    )


async def running(request: web.Request) -> web.Response:
    return _json(_svc(request).running())


async def request_list(request: web.Request) -> web.Response:
    return _json(_svc(request).request_types())


async def version(request: web.Request) -> web.Response:
    return _json(VersionView(version=_svc(request).version))


async def health(request: web.Request) -> web.Response:
    view = _svc(request).health()
    status = 200 if view.ok else 503
    if not authenticated(request):  # a probe without a token: no paths, no error texts
        return _json(probe_health(view), status)
    return _json(view, status)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    body, content_type = _svc(request).metrics()
    return web.Response(body=body, headers={"Content-Type": content_type})


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" | "header"
    schema: dict[str, Any]
    description: str = ""
    repeat: bool = False


@dataclass(frozen=True)
class RouteDef:
    """One endpoint: routing, and what the OpenAPI document says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    response: Any = None
    status: int = 200
    body: Any = None
    body_required: bool = False
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    extra_responses: dict[int, Any] = field(default_factory=dict)


_STR = {"type": "string"}
_SEQ = {"type": "integer", "minimum": 0, "maximum": 10**18}
_FIND = (
    Param("type", "query", _STR, "request type"),
    Param("user", "query", _STR, "user who started it"),
    Param("state", "query", {"type": "string", "enum": list(RequestState)}, "state", True),
    Param(
        "arg", "query", {"type": "string", "pattern": "^[^=]+="}, "key=value an arg must have", True
    ),
    Param("since", "query", {"type": "string", "format": "date-time"}, "created at or after"),
    Param("until", "query", {"type": "string", "format": "date-time"}, "created before"),
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 10**9}),
)
_R = f"{PREFIX}/requests/{{id}}"
_W = (400, 403, 404, 409, 503)

ROUTES: tuple[RouteDef, ...] = (
    RouteDef(
        "POST",
        f"{PREFIX}/requests",
        create_request,
        "Create and start a request (or, with dryRun, show the chain it would build)",
        response=RequestView,
        status=201,
        body=CreateBody,
        body_required=True,
        params=(
            Param("dryRun", "query", {"type": "boolean"}, "return the chain, start nothing"),
            Param(
                "Idempotency-Key",
                "header",
                {"type": "string", "pattern": f"^{_IDEMPOTENCY_KEY.pattern}$"},
                "a replay returns the first request",
            ),
        ),
        errors=(400, 403, 409, 413, 503),
        extra_responses={200: (RequestView, PlanView)},
    ),
    RouteDef(
        "GET",
        f"{PREFIX}/requests",
        find_requests,
        "Find requests, newest first",
        response=list[RequestView],
        params=_FIND,
        errors=(400,),
    ),
    RouteDef("GET", _R, get_request, "A request and its chain", RequestDetail, errors=(404,)),
    RouteDef("PUT", f"{_R}/stop", _change("stop"), "Stop a request", RequestView, errors=_W),
    RouteDef(
        "PUT", f"{_R}/suspend", _change("suspend"), "Suspend a request", RequestView, errors=_W
    ),
    RouteDef("PUT", f"{_R}/resume", _change("resume"), "Resume a request", RequestView, errors=_W),
    RouteDef(
        "PUT", f"{_R}/retry", retry, "Retry failed jobs", RequestView, body=RetryBody, errors=_W
    ),
    RouteDef(
        "PUT",
        f"{_R}/jobs/{{job_id}}/skip",
        skip,
        "Skip a job",
        RequestView,
        body=SkipBody,
        body_required=True,
        errors=_W,
    ),
    RouteDef(
        "GET", f"{_R}/log", request_log, "Every try of every job", list[JobLogRow], errors=(404,)
    ),
    RouteDef(
        "GET", f"{_R}/log/{{job_id}}", job_log, "Every try of a job", list[JobLogRow], errors=(404,)
    ),
    RouteDef(
        "GET",
        f"{_R}/events",
        events,
        "Server-sent events of a request, ending with `end` after a final state",
        params=(
            Param("after", "query", _SEQ, "events after this seq"),
            Param("Last-Event-ID", "header", _SEQ, "as `after`, on reconnect"),
        ),
        errors=(400, 404),
        content_type="text/event-stream",
    ),
    RouteDef("GET", f"{PREFIX}/status/running", running, "Jobs running now", list[RunningJob]),
    RouteDef("GET", f"{PREFIX}/request-list", request_list, "Request types", list[RequestTypeView]),
    RouteDef("GET", f"{PREFIX}/version", version, "Daemon version", VersionView),
    RouteDef(
        "GET",
        f"{PREFIX}/health",
        health,
        "Health; 503 when not ok. Without a token (auth enabled): only ok and a reason",
        (HealthView, ProbeHealthView),
        extra_responses={503: (HealthView, ProbeHealthView)},
    ),
    RouteDef("GET", f"{PREFIX}/openapi.json", openapi, "This document (OpenAPI 3.1)"),
    RouteDef("GET", "/metrics", metrics, "Prometheus metrics", content_type="text/plain"),
)
