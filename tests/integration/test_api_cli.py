"""The client subcommands against a real server (run in-process, in a worker thread, since
each command runs its own event loop), plus one run as `python -m daemon.cli_client`."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pwd
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon import cli_client
from daemon.api.auth import AuthSettings, TokenEntry, token_sha256
from daemon.api.wire import ProbeHealthView
from daemon.client import ApiError, Client, SyncClient
from daemon.model import HealthView, JobState, RequestState
from tests.integration.fake_service import Served, eventually, serve


@pytest.fixture
async def srv(tmp_path: Any) -> AsyncIterator[Served]:
    async with serve(str(tmp_path)) as s:
        yield s


class Cli:
    def __init__(self, srv: Served, capsys: pytest.CaptureFixture[str]) -> None:
        self.srv, self.capsys = srv, capsys

    async def __call__(self, *argv: str, socket: bool = True) -> tuple[int, str, str]:
        where = ["--socket", self.srv.socket_path] if socket else []
        args = [*argv[:1], *where, *argv[1:]]
        code = await asyncio.to_thread(cli_client.main, args)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def cli(srv: Served, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(srv, capsys)


async def _start(cli: Cli) -> str:
    code, out, _ = await cli("start", "deploy", "app=web")
    assert code == 0
    return out.strip()


async def test_start_prints_the_id_and_passes_args(cli: Cli) -> None:
    rid = await _start(cli)
    req = cli.srv.service.requests[rid]
    assert req.args == {"app": "web", "env": "prod"}
    code, out, _ = await cli("start", "--json", "deploy", "app=db", "env=dev")
    assert code == 0 and json.loads(out)["args"] == {"app": "db", "env": "dev"}


async def test_start_errors_print_the_api_message_and_exit_2(cli: Cli) -> None:
    missing = await cli("start", "deploy")
    unknown = await cli("start", "nosuch")
    malformed = await cli("start", "deploy", "app")
    assert missing[0] == unknown[0] == malformed[0] == 2
    assert "error: missing required arg 'app' (HTTP 400)" in missing[2]
    assert "trace id:" in missing[2]
    assert "unknown request type 'nosuch'" in unknown[2]
    assert "expected key=value" in malformed[2]


async def test_start_asks_for_missing_required_args_on_a_terminal(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_client, "_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\nweb\n"))  # a blank answer is asked again
    code, out, err = await cli("start", "deploy")
    assert code == 0
    assert err.count("app (the app to deploy): ") == 2
    assert cli.srv.service.requests[out.strip()].args["app"] == "web"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # end of input: give up
    code, _, err = await cli("start", "deploy")
    assert code == 2 and "missing required arg 'app'" in err


async def test_start_idempotency_key_and_dry_run(cli: Cli) -> None:
    a = await cli("start", "--idempotency-key", "k1", "deploy", "app=web")
    b = await cli("start", "--idempotency-key", "k1", "deploy", "app=web")
    assert a[1] == b[1] and "already started" in b[2]
    code, out, _ = await cli("start", "--dry-run", "deploy", "app=web")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "JOB",
        "NAME",
        "TYPE",
        "SEQUENCE",
        "SCOPE",
        "KIND",
        "RETRY",
    ]
    assert out.splitlines()[1].split() == ["j1", "build", "shell", "deploy", "s1", "-", "1"]
    assert out.splitlines()[-1] == "edges: j1->j2, j2->j3"
    assert len(cli.srv.service.requests) == 1


async def test_status_table_and_json(cli: Cli) -> None:
    rid = await _start(cli)
    await cli.srv.service.advance_job(rid, "j1", JobState.RUNNING, status="step 2")
    code, out, _ = await cli("status", rid)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == [rid, "deploy", "PENDING"]
    assert "env=prod app=web" in lines[1]
    assert "0/3 jobs done" in out
    assert lines[-3].split() == ["j1", "build", "shell", "RUNNING", "1", "step", "2"]
    code, out, _ = await cli("status", "--json", rid)
    assert json.loads(out)["jobs"][0]["status"] == "step 2"
    code, _, err = await cli("status", "0" * 26)
    assert code == 2 and "no such request" in err and "HTTP 404" in err


@pytest.mark.parametrize(
    ("argv", "setup", "state", "call"),
    [
        (["stop"], None, "STOPPED", "stop"),
        (["suspend"], None, "SUSPENDED", "suspend"),
        (["resume"], RequestState.SUSPENDED, "RUNNING", "resume"),
        (["retry", "--job", "j2", "--job", "j3"], RequestState.FAIL, "RUNNING", "retry"),
        (["skip", "{rid}", "j2", "--reason", "not today"], None, "PENDING", "skip"),
    ],
)
async def test_changes(
    cli: Cli, argv: list[str], setup: RequestState | None, state: str, call: str
) -> None:
    rid = await _start(cli)
    if setup is not None:
        await cli.srv.service.set_state(rid, setup)
    args = [a.format(rid=rid) for a in argv]
    if "{rid}" not in argv:
        args.insert(1, rid)
    code, out, _ = await cli(*args)
    assert (code, out.strip()) == (0, f"{rid} {state}")
    last = cli.srv.service.calls[-1]
    assert last[0] == call
    if call == "retry":
        assert last[3] == ["j2", "j3"]
    if call == "skip":
        assert last[2:] == ("j2", cli_user(), "not today")


def cli_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


async def test_conflicts_exit_2(cli: Cli) -> None:
    rid = await _start(cli)
    code, _, err = await cli("resume", rid)
    assert code == 2 and "HTTP 409" in err


async def test_log_ps_find_requests_info_version(cli: Cli) -> None:
    rid = await _start(cli)
    svc = cli.srv.service
    await svc.advance_job(rid, "j1", JobState.RUNNING, status="copying")
    await svc.advance_job(rid, "j1", JobState.FAIL)
    svc.logs[rid][0].stdout = "hello out"
    await svc.advance_job(rid, "j1", JobState.RUNNING, status="again")

    _, out, _ = await cli("log", rid)
    assert [line.split()[:4] for line in out.splitlines()[1:]] == [
        ["j1", "build", "1", "FAIL"],
        ["j1", "build", "2", "RUNNING"],
    ]
    _, out, _ = await cli("log", "--output", rid, "j1")
    assert "--- j1 try 1 stdout ---\nhello out" in out
    _, out, _ = await cli("ps")
    assert out.splitlines()[1].split()[:6] == [rid, "deploy", cli_user(), "j1", "build", "2"]
    assert out.splitlines()[1].endswith("again")
    _, out, _ = await cli(
        "find",
        "--type",
        "deploy",
        "--state",
        "pending",
        "--arg",
        "app=web",
        "--since",
        "1h",
        "--limit",
        "5",
    )
    assert out.splitlines()[1].split()[:4] == [rid, "deploy", "PENDING", cli_user()]
    f = [c[1] for c in svc.calls if c[0] == "find_requests"][-1]
    assert (f.type, f.states, f.args, f.limit) == (
        "deploy",
        [RequestState.PENDING],
        {"app": "web"},
        5,
    )
    assert f.since is not None
    _, out, _ = await cli("find", "--state", "COMPLETE")
    assert out.splitlines() == ["ID  TYPE  STATE  USER  CREATED  JOBS"]
    _, out, _ = await cli("requests")
    assert any(line.split()[:3] == ["deploy", "app", "[env=prod]"] for line in out.splitlines())
    code, out, _ = await cli("info", "deploy")
    assert code == 0 and out.startswith("deploy: Deploy an app")
    assert "the app to deploy" in out
    code, _, err = await cli("info", "nosuch")
    assert code == 2 and "no request type 'nosuch'" in err
    code, out, _ = await cli("version")
    assert code == 0 and "server 0.0-test (API v1)" in out
    for cmd in (["log", rid], ["ps"], ["find"], ["requests"], ["info", "deploy"], ["version"]):
        code, out, _ = await cli(cmd[0], "--json", *cmd[1:])
        assert code == 0 and json.loads(out) is not None


@pytest.mark.parametrize(
    ("final", "code"),
    [(RequestState.COMPLETE, 0), (RequestState.FAIL, 1), (RequestState.STOPPED, 1)],
)
async def test_watch_follows_to_the_end(cli: Cli, final: RequestState, code: int) -> None:
    rid = await _start(cli)
    svc = cli.srv.service
    watching = asyncio.create_task(cli("watch", rid))
    await eventually(lambda: svc.open_streams == 1)
    await svc.set_state(rid, RequestState.RUNNING)
    await svc.advance_job(rid, "j1", JobState.RUNNING, status="building")
    await svc.advance_job(rid, "j1", JobState.COMPLETE)
    await svc.set_state(rid, final)
    got, out, _ = await watching
    assert got == code
    lines = out.splitlines()
    assert "RUNNING 0/3 done | running: j1 build (building)" in lines[2]
    assert lines[-1].endswith(f"{final} 1/3 done")


async def test_watch_of_a_finished_request_returns_at_once(cli: Cli) -> None:
    rid = await _start(cli)
    await cli.srv.service.set_state(rid, RequestState.FAIL)
    code, out, _ = await cli("watch", rid)
    assert code == 1 and out.strip() == "FAIL 0/3 done"


async def test_watch_json_prints_events(cli: Cli) -> None:
    rid = await _start(cli)
    watching = asyncio.create_task(cli("watch", "--json", rid))
    await eventually(lambda: cli.srv.service.open_streams == 1)
    await cli.srv.service.advance_job(rid, "j1", JobState.RUNNING)
    await cli.srv.service.set_state(rid, RequestState.COMPLETE)
    code, out, _ = await watching
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["state"]) for e in events] == [
        ("request", "PENDING"),
        ("job", "RUNNING"),
        ("request", "COMPLETE"),
    ]


async def test_no_daemon_is_a_clear_error(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(cli_client.main, ["ps", "--socket", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot reach spind at unix:")


async def test_url_token_and_environment(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = AuthSettings(enabled=True, tokens=[TokenEntry(user="ann", sha256=token_sha256("t0k"))])
    async with serve(str(tmp_path), auth=auth) as s:
        code = await asyncio.to_thread(
            cli_client.main, ["start", "--url", s.url, "--token", "t0k", "noop"]
        )
        assert code == 0
        rid = capsys.readouterr().out.strip()
        assert s.service.requests[rid].user == "ann"
        code = await asyncio.to_thread(cli_client.main, ["ps", "--url", s.url])
        assert code == 2 and "HTTP 401" in capsys.readouterr().err
        monkeypatch.setenv("SPIND_URL", s.url)
        monkeypatch.setenv("SPIND_TOKEN", "t0k")
        assert await asyncio.to_thread(cli_client.main, ["status", rid]) == 0
        capsys.readouterr()
        monkeypatch.delenv("SPIND_URL")
        monkeypatch.setenv("SPIND_SOCKET", s.socket_path)
        assert await asyncio.to_thread(cli_client.main, ["status", rid]) == 0
        assert rid in capsys.readouterr().out


async def test_async_and_sync_clients(srv: Served) -> None:
    async with Client(socket_path=srv.socket_path) as c:
        view, created = await c.create("deploy", {"app": "x"}, idempotency_key="z")
        again, created_again = await c.create("deploy", {"app": "x"}, idempotency_key="z")
        assert created and not created_again and again.id == view.id
        with pytest.raises(ApiError) as exc:
            await c.get("nope")
        assert exc.value.status == 404 and exc.value.trace_id == c.trace_id
        health = await c.health()
        srv.service.healthy = False
        assert health.ok and not (await c.health()).ok
    sync = SyncClient(url=srv.url)
    found = await asyncio.to_thread(sync.find, type="deploy")
    assert [r.id for r in found] == [view.id]
    detail = await asyncio.to_thread(sync.get, view.id)
    assert detail.jobs[0].id == "j1"


# (how the client connects, healthy?, the view it gets, what it says)
HEALTH_CASES = [
    ("tcp, no token", True, ProbeHealthView, {"ok": True, "reason": None}),
    ("tcp, no token", False, ProbeHealthView, {"ok": False, "reason": "journal not writable"}),
    ("tcp, token", True, HealthView, {"ok": True, "journal_writable": True}),
    ("tcp, token", False, HealthView, {"ok": False, "journal_writable": False}),
    ("socket", True, HealthView, {"ok": True, "journal_writable": True}),
]


@pytest.mark.parametrize(
    ("via", "healthy", "view", "fields"),
    HEALTH_CASES,
    ids=[f"{c[0]}, {'ok' if c[1] else '503'}" for c in HEALTH_CASES],
)
async def test_health_decodes_the_full_and_the_probe_body(
    tmp_path: Any, via: str, healthy: bool, view: type[Any], fields: dict[str, Any]
) -> None:
    """With auth on, a TCP caller without a token gets the short probe body: the client
    returns it as a ProbeHealthView instead of failing to decode it."""
    auth = AuthSettings(enabled=True, tokens=[TokenEntry(user="ann", sha256=token_sha256("t0k"))])
    async with serve(str(tmp_path), auth=auth) as s:
        s.service.healthy = healthy
        kwargs: dict[str, Any] = (
            {"socket_path": s.socket_path}
            if via == "socket"
            else {"url": s.url, "token": "t0k" if via == "tcp, token" else None}
        )
        async with Client(**kwargs) as c:
            health = await c.health()
        sync = await asyncio.to_thread(SyncClient(**kwargs).health)
    assert type(health) is view and type(sync) is view
    assert {k: getattr(health, k) for k in fields} == fields


async def test_python_dash_m(srv: Served) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli_client",
        "requests",
        "--socket",
        srv.socket_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert out.decode().splitlines()[0].split() == ["TYPE", "ARGS", "DESCRIPTION"]
