"""The `http` job type against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from daemon.jobs import JobContext, JobFactory
from daemon.jobs.http import HttpError, HttpJob, _url
from daemon.model import JobState

FACTORY = JobFactory()


def ctx(args: dict[str, Any] | None = None, **kw: Any) -> JobContext:
    return JobContext(
        request_id="r1", job_id="j1", name="n", try_no=1, try_key="r1/j1/1", args=args or {}, **kw
    )


def http(with_: dict[str, Any]) -> HttpJob:
    job = FACTORY.make("http", name="n", with_=with_)
    assert isinstance(job, HttpJob)
    return job


class Server:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.base = ""
        self.seen: list[str] = []

    async def ok(self, request: web.Request) -> web.Response:
        return web.json_response({"a": 1, "hosts": ["x", "y"]})

    async def text(self, request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def array(self, request: web.Request) -> web.Response:
        return web.json_response([1, 2])

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 200_000 + b"END")

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "body": await request.text(),
                "content_type": request.headers.get("Content-Type", ""),
                "token": request.headers.get("X-Token", ""),
            }
        )

    async def raw(self, request: web.Request) -> web.Response:
        """What arrived, undecoded: the request target and the query's (key, value) pairs."""
        self.seen.append(request.raw_path)
        return web.json_response(
            {"raw_path": request.raw_path, "query": [list(kv) for kv in request.query.items()]}
        )

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status body")

    async def slow(self, request: web.Request) -> web.Response:
        self.slow_started.set()
        await asyncio.wait_for(self.release.wait(), 30)
        return web.Response(text="late")

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_get("/ok", srv.ok)
    app.router.add_get("/text", srv.text)
    app.router.add_get("/array", srv.array)
    app.router.add_get("/big", srv.big)
    app.router.add_route("*", "/echo", srv.echo)
    app.router.add_get("/status/{code}", srv.status)
    app.router.add_get("/slow", srv.slow)
    app.router.add_get("/redirect", srv.redirect)
    app.router.add_get("/raw/{tail:.*}", srv.raw)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    srv.base = f"http://{host}:{port}"
    try:
        yield srv
    finally:
        srv.release.set()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "extra", "state", "exit", "outputs", "error"),
    [
        ("/ok", {}, JobState.COMPLETE, 200, {"a": 1, "hosts": ["x", "y"]}, ""),
        ("/text", {}, JobState.COMPLETE, 200, {}, ""),
        ("/array", {}, JobState.COMPLETE, 200, {}, ""),
        ("/redirect", {}, JobState.COMPLETE, 200, {"a": 1, "hosts": ["x", "y"]}, ""),
        ("/status/204", {}, JobState.COMPLETE, 204, {}, ""),
        ("/status/500", {}, JobState.FAIL, 500, {}, "unexpected status 500 (expected 2xx)"),
        ("/status/404", {"expect": "404"}, JobState.COMPLETE, 404, {}, ""),
        ("/status/404", {"expect": [404, "410"]}, JobState.COMPLETE, 404, {}, ""),
        (
            "/status/200",
            {"expect": ["201", 202]},
            JobState.FAIL,
            200,
            {},
            "unexpected status 200 (expected 201, 202)",
        ),
        ("/status/404", {"expect": "nope"}, JobState.FAIL, None, {}, "expect: 'nope' is not"),
        ("/ok", {"method": "DE LETE"}, JobState.FAIL, None, {}, "not a valid HTTP method"),
        ("/ok", {"timeout": "0s"}, JobState.FAIL, None, {}, "timeout: must be more than 0"),
        ("/ok", {"headers": {"X-A": "{{nope}}"}}, JobState.FAIL, None, {}, "unknown arg 'nope'"),
        ("/ok", {"headers": {"X-A": "a\r\nX-B: b"}}, JobState.FAIL, None, {}, "line break"),
        ("/ok", {"headers": {"bad name": "v"}}, JobState.FAIL, None, {}, "not a valid header"),
        ("/ok", {"headers": "X: y"}, JobState.FAIL, None, {}, "headers: expected a mapping"),
    ],
)
async def test_requests(
    server: Server,
    path: str,
    extra: dict[str, Any],
    state: JobState,
    exit: int | None,
    outputs: dict[str, Any],
    error: str,
) -> None:
    result = await http({"url": server.base + path, **extra}).run(ctx())
    assert result.state is state
    assert result.exit == exit
    assert result.outputs == outputs
    assert error in result.error
    assert bool(result.error) == bool(error)
    if exit is not None:
        assert result.stderr.startswith(f"GET {server.base}{path} -> HTTP/1.1 ")


async def test_stdout_and_summary(server: Server) -> None:
    result = await http({"url": server.base + "/status/503", "expect": 503}).run(ctx())
    assert result.stdout == "status body"
    assert result.stderr == f"GET {server.base}/status/503 -> HTTP/1.1 503 Service Unavailable"


async def test_templates_and_json_body(server: Server) -> None:
    job = http(
        {
            "url": "{{base}}/echo?host={{host}}",
            "method": "post",
            "body": {"hosts": "{{host}}", "n": ["{{n}}", 2], "keep": True},
            "headers": {"X-Token": "t-{{tok}}"},
        }
    )
    result = await job.run(ctx({"base": server.base, "host": "db1", "n": 3, "tok": "s3"}))
    assert result.state is JobState.COMPLETE, result.error
    assert result.outputs["method"] == "POST"
    assert result.outputs["path"] == "/echo?host=db1"
    assert result.outputs["content_type"] == "application/json"
    assert result.outputs["token"] == "t-s3"
    assert result.outputs["body"] == '{"hosts":"db1","n":["3",2],"keep":true}'


EVIL = "a b/../x?y=1#z"
EVIL_SENT = "a%20b%2F..%2Fx%3Fy%3D1%23z"


@pytest.mark.parametrize(
    ("url", "args", "raw_path", "query"),
    [
        # a value in the path stays one segment; in the query one value; the fragment is not sent
        (
            "{{base}}/raw/items/{{id}}/info?q={{id}}&k={{amp}}#{{id}}",
            {"id": EVIL, "amp": "a&b=c"},
            f"/raw/items/{EVIL_SENT}/info?q={EVIL_SENT}&k=a%26b%3Dc",
            [["q", EVIL], ["k", "a&b=c"]],
        ),
        # `..;` (a path traversal to some servers) and an escape in the value stay encoded
        (
            "{{base}}/raw/{{a}}/{{b}}",
            {"a": "..;", "b": "%2F+é"},
            "/raw/..%3B/%252F%2B%C3%A9",
            [],
        ),
        # the literal text as written: its space made sendable, its escapes kept
        (
            "{{base}}/raw/a b/%2F/{{n}}?x=%26&y=1+2",
            {"n": 7},
            "/raw/a%20b/%2F/7?x=%26&y=1+2",
            [["x", "&"], ["y", "1 2"]],
        ),
    ],
)
async def test_url_values_arrive_encoded_for_where_they_land(
    server: Server, url: str, args: dict[str, Any], raw_path: str, query: list[list[str]]
) -> None:
    result = await http({"url": url}).run(ctx({"base": server.base, **args}))
    assert result.state is JobState.COMPLETE, result.error
    assert result.outputs == {"raw_path": raw_path, "query": query}
    assert server.seen == [raw_path]


@pytest.mark.parametrize(
    ("url", "args", "error"),
    [
        ("{{base}}/raw/{{d}}/admin", {"d": ".."}, "url: {{d}} would make the URL path segment"),
        ("http://{{h}}/raw/x", {"h": "evil.example/x?"}, "url: {{h}} stands in the URL's host"),
        ("http://127.0.0.1:99999/raw/x", {}, "Port out of range"),
    ],
)
async def test_refused_urls_send_nothing(
    server: Server, url: str, args: dict[str, Any], error: str
) -> None:
    result = await http({"url": url}).run(ctx({"base": server.base, **args}))
    assert result.state is JobState.FAIL
    assert error in result.error
    assert server.seen == []


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://h/x?q=1#f", "http://h/x?q=1#f"),
        # what may not appear in a URL is encoded; escapes and reserved characters are kept
        ("http://h/x é?q=ü&r=%2F", "http://h/x%20%C3%A9?q=%C3%BC&r=%2F"),
        ("http://h/100%/x%zz", "http://h/100%25/x%25zz"),
        ("http://h/[x]", "http://h/%5Bx%5D"),
        # an international host name goes out in IDNA
        ("http://bücher.example:8080/x", "http://xn--bcher-kva.example:8080/x"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ],
)
def test_literal_url_text_is_made_sendable(url: str, sent: str) -> None:
    assert _url(url, {}) == sent


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://a..b.ü/", "is not a valid host name"),
        ("http://h:http/", "Port could not be cast"),
        ("mailto:x@h", "expected an http:// or https:// URL"),
        (["http://h/"], "url: expected a string, got list"),
    ],
)
def test_bad_urls(url: Any, error: str) -> None:
    with pytest.raises(HttpError) as info:
        _url(url, {})
    assert error in str(info.value)


@pytest.mark.parametrize(
    ("body", "headers", "sent", "content_type"),
    [
        ("plain {{x}}", {}, "plain v", "text/plain; charset=utf-8"),
        ("<a/>", {"Content-Type": "application/xml"}, "<a/>", "application/xml"),
        ([1, "{{x}}"], {"content-type": "text/x-list"}, '[1,"v"]', "text/x-list"),
    ],
)
async def test_string_and_list_bodies(
    server: Server, body: Any, headers: dict[str, str], sent: str, content_type: str
) -> None:
    job = http({"url": server.base + "/echo", "method": "PUT", "body": body, "headers": headers})
    result = await job.run(ctx({"x": "v"}))
    assert result.state is JobState.COMPLETE, result.error
    assert (result.outputs["body"], result.outputs["content_type"]) == (sent, content_type)


async def test_body_tail_is_bounded(server: Server) -> None:
    result = await http({"url": server.base + "/big"}).run(ctx(output_limit=1000))
    assert result.state is JobState.COMPLETE
    assert result.stdout.startswith("[... 199003 bytes cut]\n")
    assert result.stdout.endswith("x" * 997 + "END")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://127.0.0.1:{port}/x", "GET http://127.0.0.1:{port}/x: ClientConnectorError"),
        ("ftp://127.0.0.1/x", "expected an http:// or https:// URL"),
        ("http:///nohost", "expected an http:// or https:// URL"),
        ("{{{{missing}}}}/x", "url: unknown arg 'missing'"),
    ],
)
async def test_connection_and_url_errors(url: str, error: str) -> None:
    port = free_port()
    result = await http({"url": url.format(port=port)}).run(ctx())
    assert result.state is JobState.FAIL
    assert error.format(port=port) in result.error


async def test_timeout(server: Server) -> None:
    job = http({"url": server.base + "/slow", "timeout": "{{t}}"})
    result = await asyncio.wait_for(job.run(ctx({"t": "200ms"})), 10)
    assert result.state is JobState.FAIL
    assert result.error == f"GET {server.base}/slow: timed out after 200ms"


async def test_stop(server: Server) -> None:
    job = http({"url": server.base + "/slow"})
    assert job.status() == "not started"
    task = asyncio.create_task(job.run(ctx()))
    await asyncio.wait_for(server.slow_started.wait(), 5)
    assert job.status().startswith(f"GET {server.base}/slow: ")
    await job.stop()
    result = await asyncio.wait_for(task, 5)
    assert (result.state, result.error) == (JobState.STOPPED, "stopped")


async def test_cancel_run_cancels_the_request(server: Server) -> None:
    job = http({"url": server.base + "/slow"})
    task = asyncio.create_task(job.run(ctx()))
    await asyncio.wait_for(server.slow_started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
