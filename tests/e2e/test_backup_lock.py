"""Backup of a live journal, restore into a stopped daemon, one daemon per journal."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import REPO, Daemon

SPECS = {
    "s.yaml": """
sequences:
  quick:
    request: true
    args:
      required: [{name: word}]
    nodes:
      say:
        category: job
        type: shell
        with: {cmd: ["echo", "{{word}}"]}
        args: [word]
"""
}


def spind(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIND_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_backup_while_running_then_restore(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS).start()
    try:
        first = d.start_request("quick", word="one")
        assert d.wait_state(first)["state"] == "COMPLETE"
        dest = tmp_path / "backup.db"
        res = spind("backup", str(dest), "--journal", str(d.journal))
        assert res.returncode == 0, res.stderr
        assert dest.stat().st_mode & 0o777 == 0o600
        # the copy is a consistent spind journal holding the request
        with sqlite3.connect(dest) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT state FROM requests WHERE id=?", (first,)).fetchone() == (
                "COMPLETE",
            )
        # a second request after the backup, then restore while running: refused
        second = d.start_request("quick", word="two")
        d.wait_state(second)
        res = spind("restore", str(dest), "--journal", str(d.journal))
        assert res.returncode == 1 and "running" in res.stderr
        assert d.terminate() == 0
        res = spind("restore", str(dest), "--journal", str(d.journal))
        assert res.returncode == 0, res.stderr
        d.start()
        assert d.state(first) == "COMPLETE"
        status, _ = d.call("GET", f"/api/v1/requests/{second}")
        assert status == 404  # the journal is the backup's
    finally:
        d.close()


def test_second_daemon_on_same_journal_is_refused(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS).start()
    try:
        other = Daemon(tmp_path, SPECS)
        other.socket = tmp_path / "var" / "other.sock"
        other.start(wait=False)
        assert other.wait_exit(30) == 2
        assert "another spind daemon is running" in other.log()
        assert d.call("GET", "/api/v1/version")[0] == 200
    finally:
        d.close()


def test_backup_refuses_a_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    res = spind("backup", str(tmp_path / "b.db"), "--journal", str(foreign))
    assert res.returncode == 1 and "not a spind journal" in res.stderr
    assert not (tmp_path / "b.db").exists()


def test_log_of_an_unknown_job_is_404(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS).start()
    try:
        rid = d.start_request("quick", word="x")
        d.wait_state(rid)
        status, body = d.call("GET", f"/api/v1/requests/{rid}/log/j99")
        assert status == 404 and "j99" in body["error"]
        status, rows = d.call("GET", f"/api/v1/requests/{rid}/log/j2")
        assert status == 200 and rows and rows[0]["jobId"] == "j2"
    finally:
        d.close()
