"""Trace ids: one per HTTP call, taken from the client's `X-Request-Id` when it is sane.

The outermost middleware picks the id, runs the handler inside `logctx.context(trace_id=...)`
so every log line of the call carries it, and when the call ends writes one access-log line
(INFO for changes and failures, DEBUG for successful reads) and counts it (`COUNT_CALL`: method,
route template, status, for the `spind_api_requests` metric).
The response header is set in `on_response_prepare`, so that streamed responses (SSE) and error
responses carry it too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler
from loguru import logger

from daemon import ids, logctx

HEADER = "X-Request-Id"
TRACE_ID = web.RequestKey("trace_id", str)
#: who made the call, for the access log (set by the auth middleware)
CALLER = web.RequestKey("caller", str)

#: the app's call counter: (method, route template, status) of every answered call
COUNT_CALL: web.AppKey[Callable[[str, str, int], None]] = web.AppKey("count_call")
#: the route of a call that matched none (a 404 or 405 of the router)
UNMATCHED = "unmatched"

_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def pick_trace_id(header: str | None) -> str:
    """The client's id when it is 1-128 of [A-Za-z0-9._:-], else a fresh one."""
    if header is not None and _VALID.fullmatch(header):
        return header
    return ids.new_trace_id()


def trace_id_of(request: web.Request) -> str:
    tid = request.get(TRACE_ID)
    if tid is None:
        tid = pick_trace_id(request.headers.get(HEADER))
        request[TRACE_ID] = tid
    return tid


@web.middleware
async def trace_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    tid = trace_id_of(request)
    start = time.monotonic()
    status = 499  # nginx's "client closed request": only a disconnect escapes the errors layer
    with logctx.context(trace_id=tid):
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        finally:
            # Changes and failures at INFO; successful reads at DEBUG, so that clients polling
            # thousands of times a second neither flood the log (journald rate-limits) nor
            # pay a loguru record (~40 us) each.
            read = request.method in ("GET", "HEAD") and status < 400
            (logger.debug if read else logger.info)(
                "{method} {path} {status} {ms:.1f}ms user={user}",
                method=request.method,
                path=request.path[:200],
                status=status,
                ms=(time.monotonic() - start) * 1000,
                user=request.get(CALLER, "-"),
                action="http_access",
            )
            count = request.app.get(COUNT_CALL)
            if count is not None:
                count(request.method, route_of(request), status)


def route_of(request: web.Request) -> str:
    """The template of the route the call matched (`/api/v1/requests/{id}`), else UNMATCHED:
    a metric label must never be the raw path (one series per id)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


async def add_trace_header(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: every response echoes the trace id."""
    if isinstance(request, web.Request):
        response.headers[HEADER] = trace_id_of(request)
