"""Hand-written bad input to a real daemon's API: malformed and hostile bodies, deep nesting,
invalid UTF-8, hostile ids, wrong methods, slow clients, a thousand clients at once.

Expected everywhere: no 5xx, every error a JSON body with a usable message, the daemon up with
bounded memory, and the chain that runs meanwhile undisturbed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Daemon
from tests.reliability import mix
from tests.reliability.test_api_fuzz import rss_kb

pytestmark = pytest.mark.timeout(120)

RID = "01M8Y95NB20AGJE3ZMPC7DSRA2"  # well-formed, unknown
DEEP = 100_000


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("hostile")
    daemon = Daemon(root, mix.specs(), env={"SPIND_LOG_LEVEL": "WARNING"})
    daemon.start()
    yield daemon
    daemon.close()


@pytest.fixture(scope="module")
def chain(d: Daemon, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A chain that runs while the tests abuse the API; the last test checks it."""
    ledger = tmp_path_factory.mktemp("ledger") / "ledger"
    body = {"type": "fan", "args": {"ledger": str(ledger), "n": "4", "pause": "0.5"}}
    return {"id": mix.submit(d, body), "ledger": ledger}


def _error_json(status: int, raw: bytes) -> str:
    assert status < 500, (status, raw[:300])
    body = json.loads(raw)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    return str(body["error"])


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


BODIES: list[tuple[str, str, bytes, int, str]] = [
    # (name, path, raw body, status, words in the error)
    ("unclosed", "/api/v1/requests", b"{", 400, "malformed"),
    ("not json", "/api/v1/requests", b"type=line", 400, "malformed"),
    ("trailing garbage", "/api/v1/requests", b'{"type": "line"} x', 400, "malformed"),
    ("array", "/api/v1/requests", b"[]", 400, "invalid body"),
    ("string", "/api/v1/requests", b'"line"', 400, "invalid body"),
    ("null", "/api/v1/requests", b"null", 400, "invalid body"),
    ("number type", "/api/v1/requests", b'{"type": 5}', 400, "type"),
    ("args a list", "/api/v1/requests", b'{"type": "line", "args": []}', 400, "args"),
    ("arg a number", "/api/v1/requests", b'{"type": "line", "args": {"ledger": 5}}', 400, "ledger"),
    (
        "arg an object",
        "/api/v1/requests",
        b'{"type": "line", "args": {"ledger": {}}}',
        400,
        "ledger",
    ),
    ("unknown field", "/api/v1/requests", b'{"type": "line", "colour": 1}', 400, "colour"),
    ("unknown type", "/api/v1/requests", b'{"type": "../../etc/passwd"}', 400, "unknown"),
    ("NUL in type", "/api/v1/requests", b'{"type": "line\\u0000"}', 400, "unknown"),
    ("huge number", "/api/v1/requests", b'{"type": "line", "args": {"x": 1e999999}}', 400, ""),
    (
        "deep args",
        "/api/v1/requests",
        b'{"type": "line", "args": {"a": %s}}' % _deep(DEEP),
        400,
        "",
    ),
    ("deep top", "/api/v1/requests", _deep(DEEP), 400, ""),
    ("deep object", "/api/v1/requests", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, ""),
    ("deep retry", f"/api/v1/requests/{RID}/retry", b'{"jobs": %s}' % _deep(DEEP), 400, ""),
    ("deep skip", f"/api/v1/requests/{RID}/jobs/j1/skip", _deep(DEEP), 400, ""),
    ("bad utf-8", "/api/v1/requests", b'{"type": "\xff\xfe"}', 400, ""),
    ("bad utf-8 key", "/api/v1/requests", b'{"\xc3\x28": 1}', 400, ""),
    ("lone surrogate", "/api/v1/requests", b'{"type": "\\ud800"}', 400, ""),
    ("empty", "/api/v1/requests", b"", 400, "required"),
    ("blank", "/api/v1/requests", b"   \n", 400, "required"),
]


@pytest.mark.parametrize(
    ("name", "path", "raw", "status", "words"), BODIES, ids=[b[0] for b in BODIES]
)
def test_bad_bodies(
    d: Daemon, chain: Any, name: str, path: str, raw: bytes, status: int, words: str
) -> None:
    method = "POST" if path.endswith("/requests") else "PUT"
    r = d.send(method, path, raw=raw, headers={"Content-Type": "application/json"})
    error = _error_json(r.status, r.raw)
    assert r.status == status, (r.status, error)
    assert words.lower() in error.lower(), error


def test_huge_bodies(d: Daemon, chain: Any) -> None:
    big = b'{"type": "line", "args": {"ledger": "%s"}}' % (b"x" * (2 << 20))
    r = d.send("POST", "/api/v1/requests", raw=big)
    assert r.status == 413 and "larger than" in _error_json(r.status, r.raw)
    # without a Content-Length: chunked, read until the limit
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(d.socket))
    head = b"POST /api/v1/requests HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    sock.sendall(head)
    chunk = b"x" * 65536
    try:
        for _ in range(40):  # 2.5 MB, past the 1 MB limit
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon answered and closed: fine
    answer = b""
    with_reset = False
    try:
        while b"\r\n\r\n" not in answer or len(answer) < 200:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    except ConnectionResetError:
        with_reset = True
    sock.close()
    assert with_reset or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # a body just under the limit is read and judged on its content
    near = b'{"type": "nope", "args": {"a": "%s"}}' % (b"y" * 1_000_000)
    r = d.send("POST", "/api/v1/requests?dryRun=true", raw=near)
    assert r.status == 400 and "unknown request type" in _error_json(r.status, r.raw)


IDS = [
    "..",
    "../../etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%00",
    "a%00b",
    "A" * 4096,
    "%ff%fe",
    "%c3%28",
    "01M8Y95NB20AGJE3ZMPC7DSRA2%00",
    "01m8y95nb20agje3zmpc7dsra2",
    "$(id)",
    "%0d%0aX-Injected:%201",
]


@pytest.mark.parametrize("bad", IDS, ids=range(len(IDS)))
def test_hostile_ids(d: Daemon, chain: Any, bad: str) -> None:
    for method, path in (
        ("GET", f"/api/v1/requests/{bad}"),
        ("GET", f"/api/v1/requests/{bad}/log"),
        ("GET", f"/api/v1/requests/{bad}/events"),
        ("PUT", f"/api/v1/requests/{bad}/stop"),
        ("PUT", f"/api/v1/requests/{bad}/retry"),
        ("GET", f"/api/v1/requests/{RID}/log/{bad}"),
        ("PUT", f"/api/v1/requests/{RID}/jobs/{bad}/skip"),
    ):
        r = d.send(method, path, raw=b'{"reason": "x"}' if method == "PUT" else None)
        error = _error_json(r.status, r.raw)
        assert r.status in (400, 404), (method, path, r.status, error)
        assert "x-injected" not in r.headers


def test_wrong_methods(d: Daemon, chain: Any) -> None:
    seen = Counter[int]()
    for path in (
        "/api/v1/requests",
        f"/api/v1/requests/{RID}",
        f"/api/v1/requests/{RID}/stop",
        f"/api/v1/requests/{RID}/log",
        "/api/v1/health",
        "/api/v1/openapi.json",
        "/metrics",
    ):
        for method in ("DELETE", "PATCH", "TRACE", "OPTIONS", "PUT", "POST", "PROPFIND"):
            r = d.send(method, path, raw=b"{}")
            seen[r.status] += 1
            if r.status == 405:
                assert "method not allowed" in _error_json(r.status, r.raw)
                assert r.headers.get("allow")
            else:  # a method the route has, with an empty body or an unknown id
                _error_json(r.status, r.raw)
                assert r.status in (400, 404, 409), (method, path, r.status)
    assert seen[405] >= 30, seen
    # a method HTTP's parser does not know is refused before routing (aiohttp's own text 400)
    r = d.send("BREW", "/api/v1/health")
    assert r.status == 400 and b"method" in r.raw.lower()


def test_slow_clients_do_not_block_others(d: Daemon, chain: Any) -> None:
    """Slowloris, bounded: 60 clients dribble a request line and headers one byte at a time;
    meanwhile every normal call is answered, and once they give up their sockets are freed."""
    assert d.proc is not None
    fds = len(list(Path(f"/proc/{d.proc.pid}/fd").iterdir()))
    slow = []
    for _ in range(60):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(d.socket))
        slow.append(s)
    request = b"GET /api/v1/version HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    answered = 0
    for i in range(40):
        for s in slow:
            s.send(request[i : i + 1])
        r = d.send("GET", "/api/v1/health", timeout=5)
        answered += r.status == 200
        time.sleep(0.05)
    assert answered == 40
    for s in slow:
        s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = len(list(Path(f"/proc/{d.proc.pid}/fd").iterdir()))
        if now <= fds + 5:
            break
        time.sleep(0.1)
    assert now <= fds + 5, (fds, now)


async def _crowd(d: Daemon, n: int) -> Counter[int]:
    conn = aiohttp.UnixConnector(path=str(d.socket), limit=n)
    statuses: Counter[int] = Counter()
    bodies = [
        ("GET", "/api/v1/version", None),
        ("GET", "/api/v1/health", None),
        ("GET", "/api/v1/requests?limit=5", None),
        ("GET", f"/api/v1/requests/{RID}", None),
        ("POST", "/api/v1/requests?dryRun=true", {"type": "line", "args": {"ledger": "/x"}}),
        ("POST", "/api/v1/requests", {"type": "line", "args": {}}),
        ("POST", "/api/v1/requests", b"{"),
    ]
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one(i: int) -> None:
            method, path, body = bodies[i % len(bodies)]
            kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
            async with s.request(method, f"http://spind{path}", **kw) as resp:
                raw = await resp.read()
                statuses[resp.status] += 1
                if resp.status >= 400:
                    _error_json(resp.status, raw)

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 60)
    return statuses


def test_a_thousand_clients_at_once(d: Daemon, chain: Any) -> None:
    assert d.proc is not None
    before = rss_kb(d.proc.pid)
    statuses = asyncio.run(_crowd(d, 1000))
    assert sum(statuses.values()) == 1000
    assert not [s for s in statuses if s >= 500], statuses
    assert rss_kb(d.proc.pid) - before < 64 * 1024


def test_the_chain_ran_undisturbed(d: Daemon, chain: dict[str, Any]) -> None:
    """Last in this file: the chain started with the first test completed as designed."""
    assert d.wait_state(chain["id"], timeout=60)["state"] == "COMPLETE"
    assert d.proc is not None and d.proc.poll() is None
    assert mix.check(d.journal, chain["ledger"]).violations == []
