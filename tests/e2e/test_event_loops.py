"""The daemon on each event loop (`event_loop`: asyncio, uvloop): everything that touches the
loop's own machinery works the same on both. Signals (SIGHUP reload, SIGTERM suspend),
subprocesses (shell jobs, their outputs, stop of a process group), the Unix socket's peer
credentials, TCP, a live event stream, threads calling back (the journal), resume at start.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Daemon, eventually, free_port, no_500

pytestmark = pytest.mark.timeout(120)

SPECS = {
    "loops.yaml": """
sequences:
  fan:
    request: true
    args:
      optional: [{name: tag, default: none}]
    nodes:
      list:
        category: job
        type: shell
        sets: [{arg: hosts}]
        with: {cmd: 'echo "hosts=[\\"a\\", \\"b\\", \\"c\\"]" >> "$SPIND_OUTPUT"'}
      each-host:
        category: sequence
        type: touch
        each: ["hosts:host"]
        parallel: 2
        deps: [list]
  touch:
    args:
      required: [{name: host}]
    nodes:
      hello:
        category: job
        type: shell
        args: [{expected: host}]
        with: {cmd: ["echo", "hello {{host}}"]}
  nap:
    request: true
    args:
      optional: [{name: tag, default: none}]
    nodes:
      nap:
        category: job
        type: shell
        with: {cmd: "sleep 30"}
"""
}


def _me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _sse_kinds(raw: bytes) -> list[str]:
    kinds = []
    for block in raw.decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if fields.get("event") == "end":
            kinds.append("end")
        elif "data" in fields:
            kinds.append(json.loads(fields["data"])["kind"])
    return kinds


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_daemon_works_the_same_on_each_event_loop(tmp_path: Path, loop: str) -> None:
    pytest.importorskip(loop)
    d = Daemon(
        tmp_path, SPECS, port=free_port(), config=f"event_loop: {loop}\nshutdown_grace: 200ms\n"
    )
    d.start()
    try:
        assert f"event loop: {loop}" in d.log()
        # subprocesses, outputs, each with parallel; the socket's peer is the creator
        rid = d.start_request("fan")
        done = d.wait_state(rid)
        assert (done["state"], done["user"]) == ("COMPLETE", _me())
        stdout = sorted(r["stdout"] for r in d.log_rows(rid) if "hello" in r["stdout"])
        assert stdout == ["hello a\n", "hello b\n", "hello c\n"]
        # the event stream of a finished request: every change, then the end
        reply = d.send("GET", f"/api/v1/requests/{rid}/events", tcp=True)
        kinds = _sse_kinds(reply.raw)
        assert reply.status == 200 and kinds[-1] == "end" and "job" in kinds, kinds
        # stop reaches a running process group
        nap = d.start_request("nap")
        eventually(lambda: d.log_rows(nap) and d.log_rows(nap)[0]["state"] == "RUNNING")
        assert d.put(nap, "stop")[0] == 200
        assert d.wait_state(nap)["state"] == "STOPPED"
        # SIGHUP reloads; SIGTERM suspends what runs; the next start resumes it
        nap2 = d.start_request("nap")
        eventually(lambda: d.state(nap2) == "RUNNING")
        d.signal(signal.SIGHUP)
        eventually(lambda: "reload" in d.log() and d.call("GET", "/api/v1/health")[0] == 200)
        assert d.terminate() == 0
        with d.db() as conn:
            row = conn.execute("SELECT state FROM requests WHERE id = ?", (nap2,)).fetchone()
        assert row["state"] == "SUSPENDED"
        d.start()
        eventually(lambda: d.state(nap2) == "RUNNING")
        tries = [r["try"] for r in d.log_rows(nap2)]
        assert tries[-1] == 2  # the interrupted try, then a fresh one
        assert d.put(nap2, "stop")[0] == 200
        assert d.wait_state(nap2)["state"] == "STOPPED"
        no_500(d)
    finally:
        d.close()


def test_event_loop_uvloop_refuses_to_start_without_uvloop(tmp_path: Path) -> None:
    # a `uvloop` that cannot be imported shadows the installed one
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{REPO}", "SPIND_EVENT_LOOP": "uvloop"}
    d = Daemon(tmp_path / "a", SPECS, env=env)
    d.start(wait=False)
    assert d.wait_exit() == 2
    assert "event_loop: uvloop cannot be imported (no uvloop here)" in d.log()
    default = Daemon(tmp_path / "b", SPECS, env={"PYTHONPATH": env["PYTHONPATH"]})
    default.start()  # asyncio, the default, needs no uvloop
    try:
        assert "event loop: asyncio" in default.log()
    finally:
        default.close()
