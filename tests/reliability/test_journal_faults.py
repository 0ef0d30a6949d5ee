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


class ReadOnly(Fault):
    """Remount the journal's file system read-only, then read-write."""

    def _remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.mnt)], check=True)

    def inject(self) -> None:
        self._remount("ro")

    def clear(self) -> None:
        self._remount("rw")


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


FAULTS: dict[str, tuple[type[Fault], bool]] = {
    "disk-full": (DiskFull, True),
    "read-only": (ReadOnly, True),
    "locked": (Locked, False),
    "fsize": (FileSizeLimit, False),
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_journal_fault_stalls_then_recovers(spawn: Spawn, tmp_path: Path, kind: str) -> None:
    cls, needs_mount = FAULTS[kind]
    if needs_mount and (why := _can_mount()):
        pytest.skip(why)
    with contextlib.ExitStack() as stack:
        mnt = stack.enter_context(tmpfs(tmp_path / "fs", "3m")) if needs_mount else None
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
    eventually(lambda: _health(d)[0] == 200, timeout=40)
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
        status, body = d.call(
            "POST", "/api/v1/requests", {"type": "line", "args": {"ledger": str(ledger)}}
        )
        (created.append(body["id"]) if status == 201 else errors.append((status, body)))

    t = threading.Thread(target=create)
    t.start()
    time.sleep(7.0)  # longer than the journal's busy timeout
    assert ledger_lines(ledger) == []
    lock.clear()
    t.join(30)
    assert all(status == 503 and "error" in body for status, body in errors), errors
    rid = created[0] if created else mix.submit(d, {"type": "line", "args": {"ledger": str(ledger)}})
    assert d.wait_state(rid)["state"] == "COMPLETE"
    eventually(lambda: _health(d)[0] == 200, timeout=40)
