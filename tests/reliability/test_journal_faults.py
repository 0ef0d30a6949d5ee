"""Journal faults under a real daemon: the disk fills, the file system turns read-only, another
process holds the write lock, the file size limit is hit.

While the fault lasts the daemon must stop starting jobs, say it is unhealthy (`/health` 503,
`journalWritable: false`, an error in its log) and keep what was committed; once the fault
clears it carries on by itself (or exits non-zero for systemd to restart it). It never runs a
try whose RUNNING row it could not commit: every try in the ledger is in the journal.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Daemon, eventually, ledger_lines
from tests.reliability import mix
from tests.reliability.conftest import Spawn

pytestmark = pytest.mark.timeout(150)

GRACE = "shutdown_grace: 300ms\n"


def _can_mount() -> str:
    """'' if this process may mount a tmpfs, else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount commands"
    return ""


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _health(d: Daemon) -> tuple[int, dict[str, Any]]:
    status, body = d.call("GET", "/api/v1/health")
    return status, body if isinstance(body, dict) else {}


def _unhealthy(d: Daemon) -> bool:
    status, body = _health(d)
    return status == 503 and body.get("journalWritable") is False


# ---- the faults: each makes the journal unwritable, then lets it be written again


class Fault:
    name = ""

    def __init__(self, d: Daemon, mnt: Path | None) -> None:
        self.d = d
        self.mnt = mnt

    def inject(self) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError


class DiskFull(Fault):
    """Fill the tmpfs that holds the journal: the WAL cannot grow."""

    def inject(self) -> None:
        assert self.mnt is not None
        with open(self.mnt / "filler", "wb", buffering=0) as f:
            for size in (1 << 16, 1 << 12):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * size)

    def clear(self) -> None:
        assert self.mnt is not None
        (self.mnt / "filler").unlink()


class Locked(Fault):
    """Another process takes the journal's write lock and keeps it past the busy timeout."""

    def inject(self) -> None:
        self.conn = sqlite3.connect(self.d.journal, isolation_level=None, timeout=30)
        self.conn.execute("BEGIN EXCLUSIVE")

    def clear(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


class FileSizeLimit(Fault):
    """RLIMIT_FSIZE on the daemon: no file it writes may grow past its size now."""

    def inject(self) -> None:
        assert self.d.proc is not None
        var = self.d.journal.parent
        biggest = max(p.stat().st_size for p in var.iterdir() if p.is_file())
        self.old = resource.prlimit(self.d.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.d.proc.pid, resource.RLIMIT_FSIZE, (biggest, self.old[1]))

    def clear(self) -> None:
        assert self.d.proc is not None
        resource.prlimit(self.d.proc.pid, resource.RLIMIT_FSIZE, self.old)


#: name -> (fault, needs a tmpfs). A read-only remount is refused while the daemon has the
#: journal open for writing ("mount point is busy"): see test_read_only_journal_at_start.
FAULTS: dict[str, tuple[type[Fault], bool]] = {
    "disk-full": (DiskFull, True),
    "locked": (Locked, False),
    "fsize": (FileSizeLimit, False),
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_journal_fault_stalls_then_recovers(spawn: Spawn, tmp_path: Path, kind: str) -> None:
    cls, needs_mount = FAULTS[kind]
    if needs_mount and (why := _can_mount()):
        pytest.skip(why)
    with contextlib.ExitStack() as stack:
        mnt = stack.enter_context(tmpfs(tmp_path / "fs", "16m")) if needs_mount else None
        journal = (mnt or tmp_path / "var") / "spind.db"
        d = spawn(env={"SPIND_JOURNAL": str(journal)}, start=False)
        d.journal = journal
        d.socket.parent.mkdir(parents=True, exist_ok=True)
        d.start()
        _run_fault(d, cls(d, mnt), tmp_path / "ledger")
        assert d.terminate() == 0
        rep = mix.check(d.journal, tmp_path / "ledger")
        assert rep.violations == []


def _run_fault(d: Daemon, fault: Fault, ledger: Path) -> None:
    rng = random.Random(3)
    before = mix.submit(d, {"type": "line", "args": {"ledger": str(ledger), "pause": "0"}})
    assert d.wait_state(before)["state"] == "COMPLETE"
    bodies = [mix.random_request(rng, ledger, slow=False) for _ in range(8)]
    rids = [mix.submit(d, b) for b in bodies]
    time.sleep(0.3)
    fault.inject()
    try:
        eventually(lambda: _unhealthy(d), timeout=30)
        # stalled: no try starts that the journal does not hold (checked at the end); the
        # journal still answers reads and says what was committed
        time.sleep(1.5)
        assert d.state(before) == "COMPLETE"
        _status, body = _health(d)
        assert body.get("lastJournalError"), body
        assert "journal" in d.log().lower()
    finally:
        fault.clear()
    assert d.proc is not None
    if d.proc.poll() is not None:  # gave up: systemd would restart it
        assert d.proc.returncode != 0
        d.start()
    for rid, body in zip(rids, bodies, strict=True):
        assert d.wait_state(rid, timeout=60)["state"] == mix.EXPECTED[body["type"]], rid
    eventually(lambda: _health(d)[0] == 200, timeout=10)  # a commit since the fault: healthy
    assert len(ledger_lines(ledger)) > 3


def test_nothing_starts_while_the_journal_is_locked(spawn: Spawn, tmp_path: Path) -> None:
    """Jobs that become ready during the fault wait for it: no ledger line appears while the
    write lock is held by someone else, and they all run afterwards."""
    d = spawn()
    ledger = tmp_path / "ledger"
    lock = Locked(d, None)
    lock.inject()
    created: list[str] = []
    errors: list[Any] = []

    def create() -> None:  # blocks (busy) or fails with 503 while the lock is held
        line = {"type": "line", "args": {"ledger": str(ledger)}}
        status, body = d.call("POST", "/api/v1/requests", line)
        (created.append(body["id"]) if status == 201 else errors.append((status, body)))

    t = threading.Thread(target=create)
    t.start()
    time.sleep(7.0)  # longer than the journal's busy timeout
    assert ledger_lines(ledger) == []
    lock.clear()
    t.join(30)
    assert all(status == 503 and "error" in body for status, body in errors), errors
    line = {"type": "line", "args": {"ledger": str(ledger)}}
    rid = created[0] if created else mix.submit(d, line)
    assert d.wait_state(rid)["state"] == "COMPLETE"
    eventually(lambda: _health(d)[0] == 200, timeout=10)


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
    eventually(lambda: _health(d)[0] == 200, timeout=10)
    assert d.terminate() == 0
    assert mix.check(d.journal, ledger, expected={"retry-later": "COMPLETE"}).violations == []


def test_read_only_journal_at_start(spawn: Spawn, tmp_path: Path) -> None:
    """The journal's file system is read-only when the daemon starts: it refuses to start
    (exit 2, a clear log line) and changes nothing; read-write again, it resumes the chain."""
    if why := _can_mount():
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
