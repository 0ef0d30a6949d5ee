"""Crashes and faults for real: SIGKILL mid-stream, a write limit on the file, online backup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from daemon.journal import Journal, RequestFilter
from daemon.model import JobState
from tests.integration.journal_helpers import T0, make_chain, make_record, open_journal

REPO = Path(__file__).resolve().parents[2]

WRITER_SCRIPT = """
import asyncio, sys
from pathlib import Path
from tests.integration.journal_helpers import T0, make_chain, make_record, open_journal

async def main(path):
    j = await open_journal(Path(path))

    async def worker(w):
        i = 0
        while True:
            rid = f"W{w}-{i}"
            await j.create_request(make_record(rid, args={"pad": "x" * 2000}), make_chain(5))
            await j.job_started(rid, "j1", 1, 1, T0)
            print(rid, flush=True)  # acknowledged: both writes committed
            i += 1

    await asyncio.gather(*(worker(w) for w in range(16)))

asyncio.run(main(sys.argv[1]))
"""

FSIZE_SCRIPT = """
import asyncio, json, resource, signal, sys
from pathlib import Path
from daemon.journal import JournalUnavailable
from tests.integration.journal_helpers import make_chain, make_record, open_journal

async def main(path):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    j = await open_journal(Path(path))
    await j.create_request(make_record("before"), make_chain(2))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    big = {"pad": "x" * 50000}
    results = await asyncio.gather(
        *(j.create_request(make_record(f"lost{i}", args=big), make_chain(2)) for i in range(4)),
        return_exceptions=True,
    )
    during = j.stats
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    await j.create_request(make_record("after", args=big), make_chain(2))
    print(json.dumps({
        "errors": [type(r).__name__ + ": " + str(r) for r in results],
        "healthy_during": during.healthy,
        "last_error": during.last_error,
        "healthy_after": j.stats.healthy,
    }))
    await j.close()

asyncio.run(main(sys.argv[1]))
"""


async def _spawn(script: str, *args: str, stderr: Path) -> asyncio.subprocess.Process:
    with stderr.open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )


async def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    proc = await _spawn(WRITER_SCRIPT, str(path), stderr=tmp_path / "stderr.txt")
    acknowledged: list[str] = []
    try:
        assert proc.stdout is not None
        while len(acknowledged) < 400:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, (tmp_path / "stderr.txt").read_text()
            acknowledged.append(line.decode().strip())
        proc.send_signal(signal.SIGKILL)
        rest, _ = await proc.communicate()  # lines printed before the kill are acknowledged too
        acknowledged += rest.decode().split()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(path)  # before spind touches it: what the crash left
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    j = await Journal.open(path)
    try:
        assert await j.integrity_check() == "ok"
        for rid in acknowledged:
            loaded = await j.load_request(rid)
            assert loaded is not None, rid
            assert len(loaded.jobs) == 5
            assert loaded.jobs["j1"].state == JobState.RUNNING
            assert [t[0] for t in loaded.running_tries] == ["j1"]
        stored = await j.find_requests(RequestFilter(limit=10_000))
        assert len(stored) >= len(acknowledged)
    finally:
        await j.close()


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ")
async def test_write_failure_is_reported_and_the_writer_recovers(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    proc = await _spawn(FSIZE_SCRIPT, str(path), stderr=tmp_path / "stderr.txt")
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
    report = json.loads(out)
    assert len(report["errors"]) == 4
    assert all(e.startswith("JournalUnavailable: journal write failed") for e in report["errors"])
    assert report["healthy_during"] is False
    assert report["last_error"]
    assert report["healthy_after"] is True

    j = await Journal.open(path)
    try:
        assert await j.integrity_check() == "ok"
        found = sorted(v.id for v in await j.find_requests(RequestFilter()))
        assert found == ["after", "before"]  # nothing of the failed batch was saved
    finally:
        await j.close()


async def test_backup_is_consistent_while_writes_continue(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "journal.db")
    created = 0
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        nonlocal created
        i = 0
        while not stop.is_set():
            rid = f"W{w}-{i}"
            await j.create_request(make_record(rid, args={"pad": "y" * 1000}), make_chain(5))
            await j.job_started(rid, "j1", 1, 1, T0)
            created += 1
            i += 1

    tasks = [asyncio.create_task(writer(w)) for w in range(8)]
    try:
        while created < 100:
            await asyncio.sleep(0.01)
        for n in range(3):
            floor = created
            dest = tmp_path / f"backup{n}.db"
            await j.backup(dest)
            ceiling = created
            conn = sqlite3.connect(dest)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                count = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
                assert floor <= count <= ceiling + 8
                # every request in the copy is whole: chain, jobs and its events
                partial = conn.execute(
                    "SELECT r.id FROM requests r WHERE"
                    " (SELECT COUNT(*) FROM jobs WHERE request_id = r.id) != 5"
                    " OR NOT EXISTS (SELECT 1 FROM chains WHERE request_id = r.id)"
                ).fetchall()
                assert partial == []
            finally:
                conn.close()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await j.close()
    assert created > 100
