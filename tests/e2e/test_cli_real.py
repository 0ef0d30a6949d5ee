"""The `spind` client commands (`python -m daemon ...` subprocesses) against a real daemon.

Every command talks to the module's daemon over its real Unix socket (`--socket`); stdin is not
a terminal, so `start` never asks for args. What the CLI printed is checked against what the
daemon answers over its API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import REPO, Daemon, eventually, serving
from tests.e2e.test_api_real import FLAKY, SPECS

pytestmark = pytest.mark.timeout(120)

CLI_SPECS = {
    **SPECS,
    "cli.yaml": """
sequences:
  slowfix:
    request: true
    desc: Fails on its first try; later tries succeed once the file MARKER.go exists.
    args:
      required: [{name: marker}]
    nodes:
      fix:
        category: job
        type: shell
        args: [{expected: marker}]
        with:
          cmd: |
            if [ -e "$SPIND_ARG_marker" ]; then
              i=0
              while [ ! -e "$SPIND_ARG_marker.go" ] && [ $i -lt 300 ]; do
                sleep 0.1; i=$((i+1))
              done
              exit 0
            fi
            touch "$SPIND_ARG_marker"; exit 1
""",
}


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("cli-real"), CLI_SPECS)
    with serving(daemon):
        yield daemon


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def ok(self, code: int = 0) -> str:
        """Its stdout, once its exit code is `code`."""
        assert self.code == code, self
        return self.out


class Spind:
    """`spind COMMAND --socket SOCKET ARGS...` as subprocesses (stdin not a terminal)."""

    def __init__(self, d: Daemon) -> None:
        self.d = d

    def popen(self, argv: tuple[str, ...]) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIND_")}
        env["PYTHONPATH"] = str(REPO)
        cmd = [sys.executable, "-m", "daemon", argv[0], "--socket", str(self.d.socket), *argv[1:]]
        return subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def many(self, *argvs: tuple[str, ...]) -> list[Run]:
        """Run independent commands at once: each takes a while just to start Python."""
        procs = [self.popen(argv) for argv in argvs]
        runs = []
        try:
            for argv, p in zip(argvs, procs, strict=True):
                out, err = p.communicate(timeout=60)
                runs.append(Run(argv, p.returncode, out, err))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return runs

    def run(self, *argv: str) -> Run:
        return self.many(argv)[0]

    def __call__(self, *argv: str) -> str:
        """Its stdout; the command must succeed."""
        return self.run(*argv).ok()

    def start(self, *argv: str) -> str:
        rid = self("start", *argv).strip()
        assert re.fullmatch(r"[0-9A-Z]{26}", rid), rid
        return rid

    def json(self, *argv: str) -> Any:
        return json.loads(self(*argv, "--json"))


@pytest.fixture
def spind(d: Daemon) -> Spind:
    return Spind(d)


def rows(table: str) -> list[list[str]]:
    """A printed table without its header, each row split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.strip().splitlines()[1:]]


def marker(d: Daemon) -> str:
    return str(d.root / f"marker-{uuid.uuid4().hex}")


def test_requests_and_info(spind: Spind) -> None:
    table, as_json, info, nosuch, version = spind.many(
        ("requests",),
        ("requests", "--json"),
        ("info", "greet"),
        ("info", "nosuch"),
        ("server-version",),
    )
    assert table.ok().splitlines()[0].split() == ["TYPE", "ARGS", "DESCRIPTION"]
    by_type = {r[0]: r[1:] for r in rows(table.out)}
    assert by_type["greet"] == ["name [mode=plain] [tag=none]", "Greet someone."]
    assert set(by_type) == {"greet", "nap", "breaks", "slowfix"}
    assert {t["name"] for t in json.loads(as_json.ok())} == set(by_type)

    assert info.ok().splitlines()[0] == "greet: Greet someone."
    assert rows(info.out.split("\n", 1)[1]) == [
        ["name", "required", "-", "who to greet"],
        ["mode", "optional", "plain", "-"],
        ["tag", "optional", "none", "-"],
        ["team", "static", "infra", "-"],
    ]
    assert nosuch.code == 2 and "no request type 'nosuch'" in nosuch.err
    assert re.fullmatch(r"client \S+\nserver \S+ \(API v1\)\n", version.ok())


def test_start_watch_status_log(spind: Spind, d: Daemon) -> None:
    tag = uuid.uuid4().hex[:10]
    rid = spind.start("greet", "name=cli", f"tag={tag}")
    watched = spind("watch", rid)
    assert watched.splitlines()[-1].endswith("COMPLETE 1/1 done"), watched
    assert d.request(rid)["state"] == "COMPLETE"

    status, detail, log, output, log_json = spind.many(
        ("status", rid),
        ("status", rid, "--json"),
        ("log", rid),
        ("log", rid, "j2", "--output"),
        ("log", rid, "--json"),
    )
    head, *_ = status.ok().splitlines()
    assert head == f"{rid}  greet  COMPLETE  by root"
    assert f"args:     name=cli mode=plain tag={tag} team=infra" in status.out
    assert "progress: 1/1 jobs done" in status.out
    jobs = status.out[status.out.index("JOB") :]
    assert rows(jobs) == [["j2", "hello", "shell", "COMPLETE", "1", "-"]]
    assert json.loads(detail.ok()) == d.request(rid)

    [row] = rows(log.ok())
    assert row[:5] == ["j2", "hello", "1", "COMPLETE", "0"]
    assert "--- j2 try 1 stdout ---\nhello, cli" in output.ok()
    assert "--- j2 try 1 stderr ---\nto-stderr" in output.out
    assert json.loads(log_json.ok()) == d.log_rows(rid)


def test_errors_exit_2_with_the_api_message(spind: Spind, d: Daemon) -> None:
    missing, static, malformed, unknown = spind.many(
        ("start", "greet"),  # not a terminal: nothing asks for `name`
        ("start", "greet", "name=x", "team=y"),
        ("start", "greet", "name"),
        ("status", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    )
    assert {missing.code, static.code, malformed.code, unknown.code} == {2}
    assert "missing required arg for 'greet': name (HTTP 400)" in missing.err
    assert re.search(r"trace id: [0-9a-f]{32}", missing.err)
    assert "static" in static.err and "(HTTP 400)" in static.err
    assert "expected key=value" in malformed.err
    assert "(HTTP 404)" in unknown.err
    nowhere = Spind(Daemon(d.root / "nowhere")).run("status", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert nowhere.code == 2 and nowhere.err.startswith("error: "), nowhere


def test_dry_run_and_idempotency_key(spind: Spind, d: Daemon) -> None:
    key = f"cli-{uuid.uuid4().hex}"
    plan, first = spind.many(
        ("start", "--dry-run", "breaks", "marker=/x"),
        ("start", "--idempotency-key", key, "greet", "name=idem"),
    )
    assert [r[:3] for r in rows(plan.ok().split("edges:")[0])] == [
        ["j2", "first", "shell"],
        ["j3", "flaky", "shell"],
        ["j4", "last", "shell"],
    ]
    assert plan.out.splitlines()[-1] == "edges: j2->j3, j3->j4"
    again, other = spind.many(
        ("start", "--idempotency-key", key, "greet", "name=idem"),
        ("start", "--idempotency-key", key, "greet", "name=other"),
    )
    assert again.ok() == first.ok()
    assert "already started with this idempotency key" in again.err
    assert other.code == 2 and "(HTTP 409)" in other.err
    d.wait_state(first.out.strip())


def test_watch_exits_1_on_fail_then_retry_and_skip(spind: Spind, d: Daemon) -> None:
    runs = spind.many(*[("start", "--watch", "breaks", f"marker={marker(d)}") for _ in "abc"])
    retried, whole, skipped = (r.ok(code=1).splitlines()[0] for r in runs)
    assert runs[0].out.splitlines()[-1].endswith("FAIL 1/3 done"), runs[0].out
    assert d.request(retried)["state"] == "FAIL"
    watch, out = spind.many(("watch", retried), ("log", retried, FLAKY, "--output"))
    assert "FAIL" in watch.ok(code=1)
    assert rows(out.ok().split("---")[0])[0][:5] == ["j3", "flaky", "1", "FAIL", "3"]
    assert f"--- {FLAKY} try 1 stderr ---\nboom" in out.out

    changes = spind.many(
        ("retry", retried, "--job", FLAKY),
        ("retry", whole),
        ("skip", skipped, FLAKY, "--reason", "fixed by hand"),
    )
    assert [c.ok().split()[0] for c in changes] == [retried, whole, skipped]
    watched = spind("watch", retried)
    assert watched.splitlines()[-1].endswith("COMPLETE 3/3 done"), watched
    assert {j["id"]: j["tries"] for j in d.request(retried)["jobs"]} == {
        "j2": 1,
        FLAKY: 2,
        "j4": 1,
    }
    assert d.wait_state(whole)["state"] == "COMPLETE"
    jobs = {j["id"]: j["state"] for j in d.wait_state(skipped)["jobs"]}
    assert jobs == {"j2": "COMPLETE", FLAKY: "SKIPPED", "j4": "COMPLETE"}


def test_watch_follows_a_retried_request_to_its_new_end(spind: Spind, d: Daemon) -> None:
    """The request failed once; `watch` during the retry must wait for the new end (it used
    to stop at the old FAIL in the event backlog and exit 1 while the retry ran)."""
    mark = marker(d)
    rid = spind.start("slowfix", f"marker={mark}")
    assert d.wait_state(rid)["state"] == "FAIL"
    spind("retry", rid)
    assert d.request(rid)["state"] in ("PENDING", "RUNNING")
    watch = spind.popen(("watch", rid))
    try:
        assert watch.stdout is not None
        seen = []
        # the backlog: the first try, its end, the retry's second try (still running)
        while len([x for x in seen if "j2 RUNNING" in x]) < 2:
            line = watch.stdout.readline()
            if not line:
                break  # it ended early: the bug
            seen.append(line)
        assert d.request(rid)["state"] == "RUNNING"
        Path(mark + ".go").touch()
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, (seen, out, err)
    assert out.splitlines()[-1].endswith("COMPLETE 1/1 done"), out
    assert d.request(rid)["state"] == "COMPLETE"


def test_ps_suspend_resume_stop(spind: Spind, d: Daemon) -> None:
    rid = spind.start("nap", "seconds=60")
    eventually(
        lambda: any(j["requestId"] == rid for j in d.call("GET", "/api/v1/status/running")[1])
    )
    table, as_json = spind.many(("ps",), ("ps", "--json"))
    [row] = [r for r in rows(table.ok()) if r[0] == rid]
    assert row[1:6] == ["nap", "root", "j2", "nap", "1"]
    assert re.fullmatch(r"\d+s", row[6]) and row[7].startswith("sleeping 1m"), row
    assert rid in [j["requestId"] for j in json.loads(as_json.ok())]

    assert spind("suspend", rid).strip() == f"{rid} SUSPENDED"
    assert spind("resume", rid).split()[1] in ("PENDING", "RUNNING")
    again = spind.run("resume", rid)
    assert again.code == 2 and "not suspended (HTTP 409)" in again.err
    assert spind("stop", rid).strip() == f"{rid} STOPPED"
    again, watch, ps = spind.many(("stop", rid), ("watch", rid), ("ps",))
    assert again.code == 2 and "already ended STOPPED (HTTP 409)" in again.err
    assert "STOPPED" in watch.ok(code=1)
    assert rid not in ps.ok()


def test_find(spind: Spind, d: Daemon) -> None:
    tag = uuid.uuid4().hex[:10]
    ok = spind.start("greet", "name=f", f"tag={tag}")
    d.wait_state(ok)
    bad = spind.run("start", "--watch", "breaks", f"marker={marker(d)}", f"tag={tag}")
    bad = bad.ok(code=1).splitlines()[0]

    queries = [
        ("--type", "greet"),
        ("--state", "fail"),
        ("--state", "FAIL", "--state", "COMPLETE", "--user", "root", "--since", "1h"),
        ("--arg", "name=f"),
        ("--user", "nobody"),
        ("--until", "1h"),
        ("--limit", "1", "--offset", "1"),
        ("--json",),
    ]
    outs = [r.ok() for r in spind.many(*[("find", "--arg", f"tag={tag}", *q) for q in queries])]
    found = {q: [r[0] for r in rows(out)] for q, out in zip(queries[:-1], outs, strict=False)}
    assert found == {
        ("--type", "greet"): [ok],
        ("--state", "fail"): [bad],
        ("--state", "FAIL", "--state", "COMPLETE", "--user", "root", "--since", "1h"): [bad, ok],
        ("--arg", "name=f"): [ok],
        ("--user", "nobody"): [],
        ("--until", "1h"): [],
        ("--limit", "1", "--offset", "1"): [ok],
    }
    table = outs[0]
    assert table.splitlines()[0].split() == ["ID", "TYPE", "STATE", "USER", "CREATED", "JOBS"]
    [row] = rows(table)
    assert row[1:4] == ["greet", "COMPLETE", "root"] and row[5] == "1/1"
    assert [v["id"] for v in json.loads(outs[-1])] == [bad, ok]
