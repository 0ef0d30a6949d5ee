"""One middleware turns every failure into a JSON error body with the right status.

`{"error": "...", "details": ...}`: our :class:`~daemon.errors.SpindError` subclasses carry their
status; msgspec decode errors are 400s naming the field (as litestar does from msgspec's error
path); aiohttp's own HTTP exceptions (unknown route, wrong method, body too large) keep their
status and `Allow` header; anything else is a 500 whose body says only "internal error" and the
trace id, while the traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from loguru import logger

from daemon.api.auth import api_settings
from daemon.api.trace import TRACE_ID
from daemon.api.wire import ErrorBody
from daemon.errors import SpindError

_encoder = msgspec.json.Encoder()

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"(?:missing required|contains unknown) field `(?P<name>[^`]*)`")

_HTTP_MESSAGES = {
    404: "not found",
    405: "method not allowed",
}


def error_response(
    status: int, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = _encoder.encode(ErrorBody(error=message, details=details))
    resp = web.Response(status=status, body=body, content_type="application/json")
    if headers:
        resp.headers.update(headers)
    return resp


def validation_error(exc: msgspec.ValidationError) -> tuple[str, dict[str, str]]:
    """msgspec's message and `$.a.b[0]` path -> ("invalid body: ... at `a.b[0]`", details)."""
    text = str(exc)
    m = _AT.match(text)
    msg = m.group("msg") if m else text
    path = (m.group("path") if m else None) or "$"
    field = path[2:] if path.startswith("$.") else path.lstrip("$")
    named = _FIELD.search(msg)
    if named:
        field = f"{field}.{named.group('name')}" if field else named.group("name")
    where = f" at `{field}`" if field else ""
    return f"invalid body: {msg}{where}", {"field": field, "message": msg}


def _from_http(exc: web.HTTPException, max_body: int) -> web.Response:
    status = exc.status
    message = _HTTP_MESSAGES.get(status, exc.reason.lower())
    if status == 413:
        message = f"request body larger than {max_body} bytes"
    headers: dict[str, str] = {}
    details: Any = None
    if status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
        details = {"allowed": sorted(m for m in exc.headers["Allow"].split(",") if m)}
    if status == 413:
        details = {"maxBytes": max_body}
    return error_response(status, message, details, headers)


def _close_if_too_large(resp: web.Response) -> web.Response:
    """After a 413 the rest of the body is unread: close instead of draining it."""
    if resp.status == 413:
        resp.force_close()
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SpindError as exc:
        if exc.status in (401, 403):
            logger.warning(
                "{status} {method} {path}: {msg}",
                status=exc.status,
                method=request.method,
                path=request.path[:200],
                msg=exc.message,
                action="access_denied",
            )
        challenge = {"WWW-Authenticate": 'Bearer realm="spind"'} if exc.status == 401 else None
        resp = error_response(exc.status, exc.message, exc.details, challenge)
        return _close_if_too_large(resp)
    except msgspec.ValidationError as exc:
        message, details = validation_error(exc)
        return error_response(400, message, details)
    except msgspec.DecodeError as exc:
        return error_response(400, f"malformed JSON body: {exc}")
    except web.HTTPException as exc:
        max_body = api_settings(request).max_body_bytes
        return _close_if_too_large(_from_http(exc, max_body))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        logger.exception(
            "unexpected error in {method} {path}",
            method=request.method,
            path=request.path[:200],
        )
        trace_id = request.get(TRACE_ID, "")
        return error_response(500, "internal error", {"traceId": trace_id})
