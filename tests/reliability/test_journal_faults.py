"""Journal faults under a real daemon: the disk fills, another process holds the write lock,
the file size limit is hit.

While the fault lasts the daemon must stop starting jobs, say it is unhealthy (`/health` 503,
`journalWritable: false`, an error in its log) and keep what was committed; once the fault
clears it carries on by itself (or exits non-zero for systemd to restart it). It never runs a
try whose RUNNING row it could not commit: every try in the ledger is in the journal.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Daemon, eventually, ledger_lines
from tests.reliability import mix
from tests.reliability.conftest import Spawn
from tests.reliability.faults import FAULTS, Fault, Locked, can_mount, health, tmpfs

pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_journal_fault_stalls_then_recovers(spawn: Spawn, tmp_path: Path, kind: str) -> None:
    cls, needs_mount = FAULTS[kind]
    if needs_mount and (why := can_mount()):
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


def _keep_writing(d: Daemon, ledger: Path, rids: list[str], bodies: list[Any]) -> str:
    """One more request while the fault lasts (a write the journal must refuse or take):
    a 201 joins the requests to check, anything else must be a 503 with a message. Returns
    "503" if /health says the journal is not writable now, "logged" if a failed write was
    logged and reported by /health as its last error, else ""."""
    body = {"type": "line", "args": {"ledger": str(ledger), "pause": "0"}}
    status, answer = d.call("POST", "/api/v1/requests", body)
    if status == 201:
        rids.append(answer["id"])
        bodies.append(body)
    else:
        assert status == 503 and answer["error"], (status, answer)
    code, view = health(d)
    if code == 503 and view.get("journalWritable") is False:
        return "503"
    # a disk that is full or a size limit only fails the writes that must grow a file: once
    # a checkpoint lets the WAL wrap around, writes succeed again and health says so
    return "logged" if view.get("lastJournalError") and "journal batch" in d.log() else ""


def _run_fault(d: Daemon, fault: Fault, ledger: Path) -> None:
    rng = random.Random(3)
    before = mix.submit(d, {"type": "line", "args": {"ledger": str(ledger), "pause": "0"}})
    assert d.wait_state(before)["state"] == "COMPLETE"
    bodies = [mix.random_request(rng, ledger, slow=False) for _ in range(8)]
    for body in bodies:
        body["args"]["pause"] = "0.3"
    rids = [mix.submit(d, b) for b in bodies]
    time.sleep(0.3)
    fault.inject()
    try:
        seen = eventually(lambda: _keep_writing(d, ledger, rids, bodies), 40, interval=0.1)
        if isinstance(fault, Locked):  # every write fails while it lasts
            assert seen == "503"
        # stalled: no try starts that the journal does not hold (checked at the end); the
        # journal still answers reads and says what was committed
        time.sleep(1.5)
        assert d.state(before) == "COMPLETE"
        _status, body = health(d)
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
    eventually(lambda: health(d)[0] == 200, timeout=10)  # a commit since the fault: healthy
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
    eventually(lambda: health(d)[0] == 200, timeout=10)
