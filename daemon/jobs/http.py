"""The `http` job type: one HTTP request with the aiohttp client.

``with:`` keys: `url` (required), `method` (default GET), `body` (a string is sent as it is; a
mapping or list is sent as JSON), `headers` (mapping), `expect` (a status code or a list of them;
default: any 2xx), `timeout` (Go duration, default 30s, for the whole exchange). ``{{name}}`` is
substituted in the url, in body strings (also inside a mapping body) and in header values. In
the url a value is percent-encoded for where it lands (:func:`daemon.jobs.template.render_url`)
and the URL is sent as rendered: the escapes reach the server unchanged.

The response body (its last ``ctx.output_limit`` bytes) becomes stdout, a summary line with the
status becomes stderr, and the status code is the try's `exit`. When the body is a JSON object,
its top-level keys are the try's outputs (the node's `sets` pick the ones it keeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import msgspec
import yarl

from daemon.duration import DurationError, format_duration, parse_duration
from daemon.jobs.base import Job, JobContext, JobResult, OutputTail, check_duration, scalar_text
from daemon.jobs.template import TemplateError, render_url, render_value
from daemon.model import JobState

DEFAULT_TIMEOUT = 30.0
#: Largest response body parsed as JSON for outputs, in bytes.
MAX_JSON_BODY = 4 * 1024 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: What a URL may hold as it is: letters, digits, `-._~`, the reserved characters and `%`.
_URL_SAFE = "!#$%&'()*+,/:;=?@~"
_BARE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class HttpError(ValueError):
    """The request cannot be made as configured (the message says why)."""


class _Request(msgspec.Struct, kw_only=True):
    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    expect: frozenset[int] | None
    timeout: float


def _status_codes(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    codes: set[int] = set()
    for item in items:
        text = scalar_text(item)
        if isinstance(item, bool) or text is None or not text.strip().isdigit():
            raise HttpError(f"expect: {item!r} is not a status code")
        code = int(text)
        if not 100 <= code <= 599:
            raise HttpError(f"expect: {code} is not a status code (100-599)")
        codes.add(code)
    if not codes:
        raise HttpError("expect: the list is empty")
    return frozenset(codes)


def _render(value: Any, what: str, args: Mapping[str, Any]) -> Any:
    try:
        return render_value(value, args)
    except TemplateError as exc:
        raise HttpError(f"{what}: {exc}") from None


def _string(value: Any, what: str, args: Mapping[str, Any]) -> str:
    text = scalar_text(value)
    if text is None:
        raise HttpError(f"{what}: expected a string, got {type(value).__name__}")
    out: str = _render(text, what, args)
    return out


def _sendable(text: str) -> str:
    """`text` with what may not appear in a URL (spaces, non-ASCII, `<>"{}|\\^``, a `%` that
    starts no escape) percent-encoded; escapes and reserved characters stay as they are."""
    return quote(_BARE_PERCENT.sub("%25", text), safe=_URL_SAFE, errors="surrogatepass")


def _url(value: Any, args: Mapping[str, Any]) -> str:
    """The rendered url, as it goes on the wire (international host names in IDNA)."""
    text = scalar_text(value)
    if text is None:
        raise HttpError(f"url: expected a string, got {type(value).__name__}")
    try:
        url = render_url(text, args)
    except TemplateError as exc:
        raise HttpError(f"url: {exc}") from None
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise HttpError(f"url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"url {url!r}: expected an http:// or https:// URL with a host")
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.partition(":")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise HttpError(f"url {url!r}: {host!r} is not a valid host name") from None
        netloc = _sendable(userinfo) + at + host + colon + port
    path, query, fragment = (_sendable(p) for p in (parts.path, parts.query, parts.fragment))
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _headers(value: Any, args: Mapping[str, Any]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HttpError(f"headers: expected a mapping, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not _TOKEN.match(key):
            raise HttpError(f"headers: {key!r} is not a valid header name")
        text = _string(raw, f"header {key}", args)
        if any(c in text for c in "\r\n\0"):
            raise HttpError(f"header {key}: the value contains a line break or NUL byte")
        out[key] = text
    return out


def _body(value: Any, headers: dict[str, str], args: Mapping[str, Any]) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping | list):
        if "content-type" not in {k.lower() for k in headers}:
            headers["Content-Type"] = "application/json"
        return msgspec.json.encode(_render(value, "body", args)).decode()
    return _string(value, "body", args)


def _request(with_: Mapping[str, Any], args: Mapping[str, Any]) -> _Request:
    url = _url(with_.get("url"), args)
    method = _string(with_.get("method", "GET"), "method", args).upper()
    if not _TOKEN.match(method):
        raise HttpError(f"method {method!r} is not a valid HTTP method")
    headers = _headers(with_.get("headers"), args)
    body = _body(with_.get("body"), headers, args)
    expect = None if with_.get("expect") is None else _status_codes(with_["expect"])
    timeout = DEFAULT_TIMEOUT
    if with_.get("timeout") is not None:
        try:
            timeout = parse_duration(_string(with_["timeout"], "timeout", args))
        except DurationError as exc:
            raise HttpError(f"timeout: {exc}") from None
        if timeout <= 0:
            raise HttpError("timeout: must be more than 0")
    return _Request(
        method=method, url=url, headers=headers, body=body, expect=expect, timeout=timeout
    )


def _expected(req: _Request, status: int) -> bool:
    return 200 <= status <= 299 if req.expect is None else status in req.expect


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class HttpJob(Job):
    type_name = "http"
    params = frozenset({"url", "method", "body", "headers", "expect", "timeout"})
    required_params = frozenset({"url"})

    def __init__(self, *, name: str, type_name: str, with_: Mapping[str, Any]) -> None:
        super().__init__(name=name, type_name=type_name, with_=with_)
        self._stop = asyncio.Event()
        self._req: _Request | None = None
        self._started: float | None = None
        self._state = "not started"

    @classmethod
    def check_with(cls, with_: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        for key in ("url", "method"):
            if with_.get(key) is not None and scalar_text(with_[key]) is None:
                problems.append(f"{key}: expected a string, got {type(with_[key]).__name__}")
        headers = with_.get("headers")
        if headers is not None and not isinstance(headers, Mapping):
            problems.append(f"headers: expected a mapping, got {type(headers).__name__}")
        if with_.get("expect") is not None:
            try:
                _status_codes(with_["expect"])
            except HttpError as exc:
                problems.append(str(exc))
        body = with_.get("body")
        if body is not None and scalar_text(body) is None and not isinstance(body, Mapping | list):
            problems.append(f"body: expected a string or a mapping, got {type(body).__name__}")
        problems.extend(check_duration(with_, "timeout"))
        return problems

    async def run(self, ctx: JobContext) -> JobResult:
        try:
            req = _request(self.with_, ctx.args)
        except HttpError as exc:
            return JobResult(state=JobState.FAIL, error=str(exc))
        self._req = req
        self._started = time.monotonic()
        fetch = asyncio.ensure_future(self._fetch(req, ctx.output_limit))
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetch
        if fetch in done:
            return fetch.result()
        self._state = "stopped"
        return JobResult(state=JobState.STOPPED, error="stopped")

    async def _fetch(self, req: _Request, limit: int) -> JobResult:
        what = f"{req.method} {req.url}"
        try:
            async with asyncio.timeout(req.timeout), aiohttp.ClientSession() as session:
                self._state = "connecting"
                async with session.request(
                    req.method,
                    yarl.URL(req.url, encoded=True),  # as rendered: yarl would undo escapes
                    headers=req.headers,
                    data=req.body,
                ) as resp:
                    self._state = f"reading the response ({resp.status})"
                    tail = OutputTail(limit)
                    whole = bytearray()
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        tail.feed(chunk)
                        if len(whole) <= MAX_JSON_BODY:
                            whole += chunk
        except TimeoutError:
            self._state = "timed out"
            return JobResult(
                state=JobState.FAIL, error=f"{what}: timed out after {format_duration(req.timeout)}"
            )
        except aiohttp.ClientError as exc:
            self._state = "failed"
            return JobResult(state=JobState.FAIL, error=f"{what}: {type(exc).__name__}: {exc}")
        version = f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else "HTTP"
        summary = f"{what} -> {version} {resp.status} {resp.reason or ''}".rstrip()
        self._state = f"done: {resp.status}"
        result = JobResult(
            state=JobState.COMPLETE,
            exit=resp.status,
            stdout=tail.text(),
            stderr=summary,
            outputs=_json_object(bytes(whole)) if len(whole) <= MAX_JSON_BODY else {},
        )
        if not _expected(req, resp.status):
            want = "2xx" if req.expect is None else ", ".join(map(str, sorted(req.expect)))
            result.state = JobState.FAIL
            result.error = f"{what}: unexpected status {resp.status} (expected {want})"
        return result

    async def stop(self) -> None:
        self._stop.set()

    def status(self) -> str:
        if self._req is None or self._started is None:
            return self._state
        took = time.monotonic() - self._started
        return f"{self._req.method} {self._req.url}: {self._state} ({took:.1f}s)"
