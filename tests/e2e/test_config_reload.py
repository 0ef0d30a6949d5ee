"""A real daemon re-reads its config file on SIGHUP: what the docs call live changes at once.

Auth first: a token added to the file works after the SIGHUP; a broken file keeps the old
settings (the old tokens work, the new ones do not), health and `spind reload` report the
error with its file and key, and a fixed file is taken again. Then the other live keys
(`max_body_bytes`, `max_running_jobs`, `work_dir`, `output_limit`) and the keys that need a
restart (kept, with a warning).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from daemon.config import hash_token
from tests.e2e.harness import REPO, Daemon, Reply, eventually, free_port, no_500
from tests.e2e.test_reload_command import reload

pytestmark = pytest.mark.timeout(180)

OLD, NEW = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
SPECS = {
    "where.yaml": """
sequences:
  where:
    request: true
    args:
      optional: [{name: pad, default: ""}]
    nodes:
      where:
        category: job
        type: shell
        with: {cmd: "printf '%0100d' 0; pwd >&2"}
  nap:
    request: true
    nodes:
      nap: {category: job, type: sleep, with: {duration: 120s}}
"""
}


def auth(*tokens: tuple[str, str], extra: str = "") -> str:
    """An auth section listing (user, token) pairs; every user has role ops."""
    lines = "".join(f"    - {{user: {u}, sha256: {hash_token(t)}}}\n" for u, t in tokens)
    roles = ", ".join(f"{u}: [ops]" for u, _ in tokens)
    return f"auth:\n  tokens:\n{lines}  roles: {{{roles}}}\n" + extra


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tcp(d: Daemon, token: str | None, method: str = "GET", path: str = "/api/v1/requests") -> Reply:
    return d.send(method, path, headers=bearer(token) if token else None, tcp=True)


def health(d: Daemon) -> dict[str, Any]:
    """The full view (socket callers are identified)."""
    _, body = d.call("GET", "/api/v1/health")
    return dict(body)


def hup(d: Daemon) -> dict[str, Any]:
    """SIGHUP, then the health once that reload finished (it ends with a spec load)."""
    before = health(d)["specsLoads"]
    d.signal(signal.SIGHUP)
    return dict(eventually(lambda: (h := health(d))["specsLoads"] > before and h))


def test_tokens_follow_the_config_file_and_a_broken_file_keeps_the_old(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS, port=free_port(), config=auth(("alice", OLD)))
    assert d.config is not None
    d.start()
    try:
        assert (tcp(d, OLD).status, tcp(d, NEW).status) == (200, 401)

        d.config.write_text(auth(("alice", OLD), ("bob", NEW)))
        h = hup(d)
        assert h["configOk"] is True and h["configErrors"] == []
        assert (tcp(d, OLD).status, tcp(d, NEW).status) == (200, 200)
        created = d.send(
            "POST", "/api/v1/requests", body={"type": "where"}, headers=bearer(NEW), tcp=True
        )
        assert created.status == 201, created.raw  # bob's roles came with his token

        # broken: bob's token is gone from the file, but the file is invalid as a whole
        d.config.write_text(auth(("alice", OLD)) + "max_running_jobs: 0\n")
        h = hup(d)
        assert h["configOk"] is False and len(h["configErrors"]) == 1
        error = h["configErrors"][0]
        assert error.startswith(f"{d.config}:") and "max_running_jobs" in error, error
        assert (tcp(d, OLD).status, tcp(d, NEW).status) == (200, 200)  # the old settings
        assert h["ok"] is True  # serving on: the error is the reload's, not the daemon's
        # a probe without a token learns nothing about the file
        assert tcp(d, None, path="/api/v1/health").json == {"ok": True}
        assert error in d.log() and "keeping the old config" in d.log()

        res = reload(d)  # `spind reload`: same outcome, as an exit status
        assert res.returncode == 1, (res.stdout, res.stderr)
        assert "config errors" in res.stderr and "max_running_jobs" in res.stderr

        d.config.write_text(auth(("alice", OLD)))
        res = reload(d)
        assert res.returncode == 0, res.stderr
        assert (tcp(d, OLD).status, tcp(d, NEW).status) == (200, 401)
        h = health(d)
        assert h["configOk"] is True and h["configErrors"] == []
        metrics = tcp(d, OLD, path="/metrics").raw.decode()
        assert 'spind_config_reloads_total{result="error"} 2.0' in metrics
        assert 'spind_config_reloads_total{result="ok"} 2.0' in metrics
        no_500(d)
    finally:
        d.close()


@pytest.mark.parametrize(
    ("before", "after", "anonymous_before", "anonymous_after"),
    [
        ("", "  metrics_public: false\n", 200, 401),
        ("  metrics_public: false\n", "  metrics_public: true\n", 401, 200),
    ],
    ids=["closed-on-reload", "opened-on-reload"],
)
def test_metrics_public_follows_the_config_file(
    tmp_path: Path, before: str, after: str, anonymous_before: int, anonymous_after: int
) -> None:
    d = Daemon(tmp_path, SPECS, port=free_port(), config=auth(("alice", OLD), extra=before))
    assert d.config is not None
    d.start()
    try:
        assert tcp(d, None, path="/metrics").status == anonymous_before
        d.config.write_text(auth(("alice", OLD), extra=after))
        assert hup(d)["configOk"] is True
        assert tcp(d, None, path="/metrics").status == anonymous_after
        assert tcp(d, OLD, path="/metrics").status == 200
    finally:
        d.close()


def test_auth_cannot_be_dropped_while_listening_beyond_loopback(tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(
        tmp_path,
        SPECS,
        port=port,
        config=auth(("alice", OLD)),
        env={"SPIND_LISTEN": f"0.0.0.0:{port}"},
    )
    assert d.config is not None
    d.start()
    try:
        d.config.write_text("max_running_jobs: 3\n")
        h = hup(d)
        assert h["configOk"] is False
        assert h["configErrors"][0].startswith(f"{d.config}: auth: ")
        assert (tcp(d, None).status, tcp(d, OLD).status) == (401, 200)

        # `spind reload` over TCP sees only the probe health without a token: it says so
        # and sends no signal; with one it reports the refusal
        loads = health(d)["specsLoads"]
        res = reload_over_tcp(d, token=None)
        assert res.returncode == 2 and "probe health" in res.stderr, res.stderr
        assert health(d)["specsLoads"] == loads
        res = reload_over_tcp(d, token=OLD)
        assert res.returncode == 1 and "auth: the section cannot be removed" in res.stderr
    finally:
        d.close()


def reload_over_tcp(d: Daemon, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIND_")}
    env.update(PYTHONPATH=str(REPO), SPIND_URL=f"http://127.0.0.1:{d.port}")
    if token:
        env["SPIND_TOKEN"] = token
    args = ["reload", "--journal", str(d.journal)]
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env, timeout=60
    )


def running(d: Daemon) -> int:
    status, body = d.call("GET", "/api/v1/status/running")
    assert status == 200, body
    return len(body)


def test_other_live_keys_apply_at_once_and_restart_keys_stay(tmp_path: Path) -> None:
    work = tmp_path / "workdir-after"
    work.mkdir()
    d = Daemon(tmp_path, SPECS, config="max_body_bytes: 2048\nmax_running_jobs: 1\n")
    assert d.config is not None
    d.start()
    try:
        big = {"type": "where", "args": {"pad": "x" * 3000}}
        too_big = d.send("POST", "/api/v1/requests", body=big)
        assert too_big.status == 413 and too_big.json["details"] == {"maxBytes": 2048}
        before = d.log_rows(d.wait_state(d.start_request("where"))["id"])[0]
        assert before["stdout"] == "0" * 100
        assert Path(before["stderr"].strip()).resolve() == tmp_path.resolve()
        naps = [d.start_request("nap"), d.start_request("nap")]
        eventually(lambda: running(d) == 1)  # one slot: the second nap waits

        d.config.write_text(
            "max_body_bytes: 8192\nmax_running_jobs: 3\n"
            f"work_dir: {work}\noutput_limit: 64\n"
            "synchronous: FULL\nlog: {format: json}\n"
        )
        h = hup(d)
        assert h["configOk"] is True
        # the waiting nap starts without waiting for the running one to end
        eventually(lambda: running(d) == 2)
        r = d.send("POST", "/api/v1/requests", body=big)
        assert r.status == 201, r.raw
        row = d.log_rows(d.wait_state(r.json["id"])["id"])[0]
        # the last output_limit bytes, after a note of what was cut
        assert row["stdout"].startswith("[... 36 bytes cut]") and row["stdout"].count("0") == 64
        tail = row["stderr"].splitlines()[-1]  # of `pwd`, cut to 64 bytes too
        assert tail.endswith("/workdir-after") and str(work.resolve()).endswith(tail)

        log = d.log()
        assert "synchronous, log.format cannot change without a restart" in log
        assert log.rstrip().splitlines()[-1][:1] != "{"  # still text
        for rid in naps:
            assert d.put(rid, "stop")[0] == 200
        assert d.terminate() == 0
        no_500(d)
    finally:
        d.close()
