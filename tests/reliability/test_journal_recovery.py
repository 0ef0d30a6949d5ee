"""Recovery from journal faults: a chain whose only write was a failed launch, and a journal
that is read-only when the daemon starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import eventually, ledger_lines
from tests.reliability import mix
from tests.reliability.conftest import Spawn
from tests.reliability.faults import Locked, can_mount, health, tmpfs

pytestmark = pytest.mark.timeout(150)

GRACE = "shutdown_grace: 300ms\n"


RETRY_LATER = """
sequences:
  retry-later:
    request: true
    args:
      required: [{name: ledger}]
    nodes:
      first:
        category: job
        type: shell
        args: [ledger]
        with:
          cmd: 'echo "$SPIND_REQUEST_ID $SPIND_JOB_ID $SPIND_TRY start" >> "$SPIND_ARG_ledger";
            [ "$SPIND_TRY" -gt 1 ]'
        retry: 1
        retryWait: 1s
"""


def test_a_chain_stalled_by_a_failed_launch_alone_recovers(spawn: Spawn, tmp_path: Path) -> None:
    """The only write a chain had in flight was the RUNNING row of its retry, and it failed:
    nothing else writes, so the writer never reports healthy by itself; the chain must still
    try again once the fault has cleared (it used to stall for good)."""
    d = spawn({"r.yaml": RETRY_LATER})
    ledger = tmp_path / "ledger"
    rid = mix.submit(d, {"type": "retry-later", "args": {"ledger": str(ledger)}})
    eventually(lambda: len(ledger_lines(ledger)) == 1)
    eventually(lambda: d.log_rows(rid)[0]["state"] == "FAIL")
    lock = Locked(d, None)
    lock.inject()  # the retry is due in 1 s; its launch waits out the busy timeout, then fails
    try:
        eventually(lambda: "job not started" in d.log(), timeout=30)
        assert len(ledger_lines(ledger)) == 1
    finally:
        lock.clear()
    assert d.wait_state(rid, timeout=30)["state"] == "COMPLETE"
    assert len(ledger_lines(ledger)) == 2
    eventually(lambda: health(d)[0] == 200, timeout=10)
    assert d.terminate() == 0
    assert mix.check(d.journal, ledger, expected={"retry-later": "COMPLETE"}).violations == []


def test_read_only_journal_at_start(spawn: Spawn, tmp_path: Path) -> None:
    """The journal's file system is read-only when the daemon starts: it refuses to start
    (exit 2, a clear log line) and changes nothing; read-write again, it resumes the chain."""
    if why := can_mount():
        pytest.skip(why)
    ledger = tmp_path / "ledger"
    with tmpfs(tmp_path / "fs", "16m") as mnt:
        d = spawn(env={"SPIND_JOURNAL": str(mnt / "spind.db")}, config=GRACE, start=False)
        d.journal = mnt / "spind.db"
        d.socket.parent.mkdir(parents=True, exist_ok=True)
        d.start()
        rid = mix.submit(d, {"type": "slow", "args": {"ledger": str(ledger), "secs": "2"}})
        eventually(lambda: len(ledger_lines(ledger)) == 2)
        assert d.terminate() == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        try:
            d.start(wait=False)
            assert d.wait_exit(30) == 2
            assert "read-only" in d.log().split("---- start 2")[1].lower()
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        d.start()
        assert d.wait_state(rid)["state"] == "COMPLETE"
        assert d.terminate() == 0
        assert mix.check(d.journal, ledger).violations == []
