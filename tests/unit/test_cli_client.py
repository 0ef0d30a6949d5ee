"""The client's pure parts: argument parsing, connection choice, tables, progress, SSE parsing."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest

from daemon import cli_client
from daemon.api.wire import ProbeHealthView
from daemon.cli_client import (
    DEFAULT_SOCKET,
    Progress,
    UsageError,
    connection,
    exit_code,
    parse_kv,
    table,
    time_arg,
    when,
)
from daemon.client import decode_health, parse_sse
from daemon.model import Event, HealthView, JobState, JobView, RequestDetail, RequestState

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {}),
        (["a=1"], {"a": "1"}),
        (["a=1=2", "b="], {"a": "1=2", "b": ""}),
        (["a=1", "a=2"], {"a": "2"}),
        (["k=v w"], {"k": "v w"}),
    ],
)
def test_parse_kv(items: list[str], expected: dict[str, str]) -> None:
    assert parse_kv(items) == expected


@pytest.mark.parametrize("bad", ["a", "=1", ""])
def test_parse_kv_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="expected key=value"):
        parse_kv([bad])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", "2024-05-01T10:00:00+00:00"),
        ("90m", "2024-05-01T10:30:00+00:00"),
        ("2024-04-01", "2024-04-01T00:00:00+00:00"),
        ("2024-04-01T08:00:00Z", "2024-04-01T08:00:00+00:00"),
        ("2024-04-01T08:00:00+02:00", "2024-04-01T08:00:00+02:00"),
    ],
)
def test_time_arg(text: str, expected: str) -> None:
    assert time_arg(text, NOW) == expected


@pytest.mark.parametrize("bad", ["yesterday", "2h ago", "2024-13-01"])
def test_time_arg_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="not a time or duration"):
        time_arg(bad, NOW)


def _ns(**kw: str | None) -> argparse.Namespace:
    return argparse.Namespace(**{"socket": None, "url": None, "token": None, **kw})


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (_ns(), {}, {"socket_path": DEFAULT_SOCKET}),
        (_ns(), {"SPIND_SOCKET": "/run/s.sock"}, {"socket_path": "/run/s.sock"}),
        (_ns(socket="/x.sock"), {"SPIND_URL": "http://h:1"}, {"socket_path": "/x.sock"}),
        (_ns(url="http://h:1", token="t"), {}, {"url": "http://h:1", "token": "t"}),
        (
            _ns(),
            {"SPIND_URL": "http://h:2", "SPIND_TOKEN": "e"},
            {"url": "http://h:2", "token": "e"},
        ),
        (
            _ns(url="http://h:1"),
            {"SPIND_TOKEN": "e", "SPIND_SOCKET": "/s"},
            {"url": "http://h:1", "token": "e"},
        ),
    ],
)
def test_connection(
    args: argparse.Namespace,
    env: dict[str, str],
    expected: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SPIND_SOCKET", "SPIND_URL", "SPIND_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert connection(args) == expected


def test_table_aligns_and_dashes_empty_cells() -> None:
    assert table(["A", "LONGER"], [("x", None), ("yyyy", "z")]).splitlines() == [
        "A     LONGER",
        "x     -",
        "yyyy  z",
    ]


def test_when() -> None:
    assert when(None) == "-"
    assert when(NOW) == "2024-05-01 12:00:00Z"


@pytest.mark.parametrize(
    ("state", "code"),
    [("COMPLETE", 0), ("FAIL", 1), ("STOPPED", 1), ("SUSPENDED", 2), ("", 2)],
)
def test_exit_code(state: str, code: int) -> None:
    assert exit_code(state) == code


def _detail() -> RequestDetail:
    jobs = [
        JobView(id="j1", name="build", type="shell", state=JobState.COMPLETE),
        JobView(id="j2", name="push", type="shell", state=JobState.PENDING),
    ]
    return RequestDetail(
        id="R",
        type="t",
        state=RequestState.RUNNING,
        user="u",
        args={},
        created_at=NOW,
        total_jobs=2,
        jobs=jobs,
    )


def _ev(seq: int, kind: str, state: str, job: str | None = None, detail: str = "") -> Event:
    return Event(seq=seq, request_id="R", kind=kind, state=state, at=NOW, job_id=job, detail=detail)


def test_progress_follows_events() -> None:
    p = Progress(_detail())
    assert p.line() == "RUNNING 1/2 done"
    assert p.apply(_ev(1, "job", "RUNNING", "j2", "50%")) is False
    assert p.line() == "RUNNING 1/2 done | running: j2 push (50%)"
    assert p.apply(_ev(2, "job", "SKIPPED", "j2")) is False
    assert p.line() == "RUNNING 2/2 done"
    # a job the client has not seen (an expanded `each`): caller re-reads the request
    assert p.apply(_ev(3, "job", "RUNNING", "j7")) is True
    assert p.line() == "RUNNING 2/3 done | running: j7 j7"
    assert p.apply(_ev(4, "request", "COMPLETE")) is False
    assert p.line().startswith("COMPLETE")


async def _lines(*chunks: bytes) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


async def test_parse_sse() -> None:
    records = [
        r
        async for r in parse_sse(
            _lines(
                b": comment\n",
                b"id: 1\n",
                b"event: job\n",
                b'data: {"a":\n',
                b"data: 1}\n",
                b"\n",
                b"retry: 10\n",
                b"\n",
                b"data:x\r\n",
                b"\r\n",
                b"event: end\n",
                b"data: {}\n",
                b"\n",
                b"data: never dispatched",
            )
        )
    ]
    assert records == [("job", b'{"a":\n1}'), ("message", b"x"), ("end", b"{}")]


def test_register_keeps_existing_commands() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    sub.add_parser("version")
    cli_client.register(sub)
    assert {
        "start",
        "status",
        "watch",
        "stop",
        "suspend",
        "resume",
        "retry",
        "skip",
        "log",
        "ps",
        "find",
        "requests",
        "info",
        "server-version",
    } <= set(sub.choices)
    args = p.parse_args(["retry", "R", "--job", "j1", "--job", "j2", "--json"])
    assert (args.id, args.job, args.json) == ("R", ["j1", "j2"], True)
    args = p.parse_args(["skip", "R", "j1", "--reason", "why"])
    assert (args.id, args.job, args.reason) == ("R", "j1", "why")
    with pytest.raises(SystemExit):
        p.parse_args(["skip", "R", "j1"])  # --reason is required


def test_main_has_version() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    cli_client.register(sub)
    assert "version" in sub.choices and "server-version" not in sub.choices


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"ok": true}', ProbeHealthView(ok=True)),
        (
            b'{"ok": false, "reason": "shutting down"}',
            ProbeHealthView(ok=False, reason="shutting down"),
        ),
        (
            b'{"ok": true, "journalWritable": true, "loopLagMs": 0.5, "specsLoads": 3}',
            HealthView(ok=True, journal_writable=True, loop_lag_ms=0.5, specs_loads=3),
        ),
        (
            b'{"ok": false, "journalWritable": true, "loopLagMs": 1.0, "configOk": false,'
            b' "configErrors": ["spind.yaml:1:1: listen: bad"]}',
            HealthView(
                ok=False,
                journal_writable=True,
                loop_lag_ms=1.0,
                config_ok=False,
                config_errors=["spind.yaml:1:1: listen: bad"],
            ),
        ),
    ],
    ids=["probe ok", "probe not ok", "full", "full with a config error"],
)
def test_decode_health_takes_either_body(body: bytes, expected: object) -> None:
    got = decode_health(body)
    assert type(got) is type(expected) and got == expected


@pytest.mark.parametrize(
    "body",
    [b'{"ok": true, "journalWritable": true}', b'{"ok": true, "extra": 1}', b"{}", b"[]"],
    ids=["full, lacking loopLagMs", "probe with an unknown field", "empty", "not an object"],
)
def test_decode_health_refuses_neither_body_naming_the_full_view(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"Expected `object`|missing required"):
        decode_health(body)
