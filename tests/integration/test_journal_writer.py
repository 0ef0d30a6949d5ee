"""The group-commit writer: batching, per-write failure, database faults and recovery."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite
import pytest

from daemon.journal import IllegalTransition, Journal, JournalUnavailable, RequestFilter, schema
from daemon.journal.writer import Writer, is_fault, run_in_connection_thread
from daemon.model import JobState
from tests.integration.journal_helpers import T0, make_chain, make_record, open_journal


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(tmp_path / "journal.db")
    yield j
    await j.close()


async def test_concurrent_writes_are_group_committed(journal: Journal) -> None:
    n = 1000
    await journal.create_request(make_record("R1"), make_chain(n))
    before = journal.stats

    async def one(i: int) -> None:
        jid = f"j{i}"
        await journal.job_started("R1", jid, 1, 1, T0)
        await journal.job_finished(
            "R1", jid, 1, log_state=JobState.COMPLETE, job_state=JobState.COMPLETE, exit=0,
            error="", stdout=f"out {i}", stderr="", outputs={"i": i}, at=T0 + 1,
        )  # fmt: skip

    await asyncio.gather(*(one(i) for i in range(1, n + 1)))
    after = journal.stats
    items = after.items - before.items
    commits = after.commits - before.commits
    assert items == 2 * n
    assert commits < items / 10
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert all(j.state == JobState.COMPLETE for j in loaded.jobs.values())
    assert sorted(loaded.completed_order, key=lambda j: int(j[1:])) == [
        f"j{i}" for i in range(1, n + 1)
    ]
    assert len(await journal.job_log("R1")) == n


async def test_refused_write_does_not_poison_its_batch(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(3))
    await journal.job_started("R1", "j2", 1, 1, T0)
    before = journal.stats
    results = await asyncio.gather(
        journal.job_started("R1", "j1", 1, 1, T0),
        journal.job_started("R1", "j2", 2, 1, T0),  # j2 is RUNNING: refused
        journal.job_started("R1", "j3", 1, 1, T0),
        return_exceptions=True,
    )
    after = journal.stats
    assert after.commits - before.commits == 1  # one transaction...
    assert after.last_batch == 3  # ...holding all three writes
    assert after.items - before.items == 2
    assert isinstance(results[1], IllegalTransition)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert {j: r.state for j, r in loaded.jobs.items()} == {
        "j1": JobState.RUNNING,
        "j2": JobState.RUNNING,
        "j3": JobState.RUNNING,
    }
    assert loaded.jobs["j2"].tries == 1  # the refused try 2 left nothing behind
    assert after.healthy


async def _plain_writer_db(path: Path, factory: type[sqlite3.Connection] | None = None) -> Any:
    kwargs: dict[str, Any] = {"isolation_level": None}
    if factory is not None:
        kwargs["factory"] = factory
    db = await aiosqlite.connect(path, **kwargs)
    await run_in_connection_thread(db, partial(schema.configure, synchronous="NORMAL", writer=True))
    await db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
    return db


def _insert(key: str) -> Any:
    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t (k) VALUES (?)", (key,))
        return key

    return write


async def test_batches_are_bounded(tmp_path: Path) -> None:
    db = await _plain_writer_db(tmp_path / "w.db")
    writer = Writer(db, max_batch=10)
    writer.start()
    try:
        keys = await asyncio.gather(*(writer.submit(_insert(f"k{i}")) for i in range(100)))
        assert keys == [f"k{i}" for i in range(100)]
        assert writer.stats.commits == 10
        assert writer.stats.last_batch == 10
        assert writer.stats.items == 100
    finally:
        await writer.close()
        await db.close()


async def test_database_fault_fails_the_batch_and_the_writer_recovers(tmp_path: Path) -> None:
    class FlakyConnection(sqlite3.Connection):
        """A real connection whose COMMIT fails while `broken` is set (a disk that went bad)."""

        broken: ClassVar[bool] = False

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if FlakyConnection.broken and sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *args)

    path = tmp_path / "w.db"
    db = await _plain_writer_db(path, FlakyConnection)
    writer = Writer(db)
    writer.start()
    try:
        assert await writer.submit(_insert("before")) == "before"
        FlakyConnection.broken = True
        results = await asyncio.gather(
            *(writer.submit(_insert(f"lost{i}")) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, JournalUnavailable) for r in results)
        assert "disk I/O error" in str(results[0])
        assert not writer.stats.healthy
        assert "disk I/O error" in writer.stats.last_error
        assert writer.stats.failed_batches == 1

        FlakyConnection.broken = False
        assert await writer.submit(_insert("after")) == "after"
        assert writer.stats.healthy
    finally:
        await writer.close()
        await db.close()
    check = sqlite3.connect(path)
    try:
        assert [r[0] for r in check.execute("SELECT k FROM t ORDER BY k")] == ["after", "before"]
    finally:
        check.close()


async def test_journal_reports_unavailable_on_fault(tmp_path: Path) -> None:
    class FullDisk(sqlite3.Connection):
        full: ClassVar[bool] = False

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if FullDisk.full and sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    path = tmp_path / "j.db"
    j = await open_journal(path)
    await j.close()
    writer_db = await aiosqlite.connect(path, isolation_level=None, factory=FullDisk)
    reader_db = await aiosqlite.connect(path, isolation_level=None)
    for db, is_writer in ((writer_db, True), (reader_db, False)):
        fn = partial(schema.configure, synchronous="NORMAL", writer=is_writer)
        await run_in_connection_thread(db, fn)
    j = Journal(path, writer_db, reader_db)
    j.writer.start()
    await j.start_boot(1, "test", at=T0)
    try:
        FullDisk.full = True
        with pytest.raises(JournalUnavailable, match="disk is full"):
            await j.create_request(make_record("R1"), make_chain())
        assert await j.get_view("R1") is None
        assert not j.stats.healthy
        FullDisk.full = False
        await j.create_request(make_record("R1"), make_chain())
        assert await j.get_view("R1") is not None
        assert j.stats.healthy
    finally:
        await j.close()


async def test_cancelled_caller_write_still_commits(journal: Journal) -> None:
    task = asyncio.create_task(journal.create_request(make_record("R1"), make_chain()))
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await journal.create_request(make_record("R2"), make_chain())  # the next batch
    found = await journal.find_requests(RequestFilter())
    assert sorted(v.id for v in found) == ["R1", "R2"]


async def test_submit_before_start_is_refused(tmp_path: Path) -> None:
    db = await _plain_writer_db(tmp_path / "w.db")
    try:
        writer = Writer(db)
        with pytest.raises(JournalUnavailable, match="not running"):
            await writer.submit(_insert("x"))
        with pytest.raises(ValueError, match="max_batch"):
            Writer(db, max_batch=0)
    finally:
        await db.close()


def _op_error(code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("x")
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (sqlite3.OperationalError("disk I/O error"), True),  # no code: assume the worst
        (_op_error(10), True),  # SQLITE_IOERR
        (_op_error(10 | (3 << 8)), True),  # SQLITE_IOERR_WRITE (an extended code)
        (_op_error(13), True),  # SQLITE_FULL
        (_op_error(8), True),  # SQLITE_READONLY
        (_op_error(5), True),  # SQLITE_BUSY
        (_op_error(1), False),  # SQLITE_ERROR: this statement is wrong, not the database
        (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
        (sqlite3.ProgrammingError("bad binding"), False),
        (sqlite3.DatabaseError("file is not a database"), True),
        (IllegalTransition("no"), False),
        (ValueError("no"), False),
    ],
)
def test_is_fault(exc: BaseException, fault: bool) -> None:
    assert is_fault(exc) is fault
