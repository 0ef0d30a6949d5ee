"""The journal's fast paths on a real file: checkpoints off the writer's path, a job's COMPLETE
row and its successors' RUNNING rows in one commit, the index behind finish order."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daemon.journal import Journal, TryEnd, checkpoint
from daemon.journal.errors import IllegalTransition, JournalError
from daemon.journal.queries import FINISH_JOBS
from daemon.journal.writer import run_in_connection_thread
from daemon.model import JobState
from tests.integration.journal_helpers import T0, make_chain, make_record


async def _journal(path: Path) -> Journal:
    j = await Journal.open(path)
    await j.start_boot(1, "test")
    return j


async def _finish(j: Journal, rid: str, jid: str, then: list[tuple[str, int, int]]) -> None:
    await j.job_finished(
        rid, jid, 1, log_state=JobState.COMPLETE, job_state=JobState.COMPLETE, exit=0,
        error="", stdout="", stderr="", outputs={"k": jid}, at=T0 + 1, then_start=then,
    )  # fmt: skip


async def _until(check: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not true in time")
        await asyncio.sleep(0.01)


async def test_complete_and_successor_start_commit_together(tmp_path: Path) -> None:
    j = await _journal(tmp_path / "j.db")
    try:
        await j.create_request(make_record("R1"), make_chain(4))
        await j.job_started("R1", "j1", 1, 1, T0)
        commits = j.stats.commits
        await _finish(j, "R1", "j1", [("j2", 1, 1)])
        assert j.stats.commits == commits + 1
        loaded = await j.load_request("R1")
        assert loaded is not None
        assert (loaded.jobs["j1"].state, loaded.jobs["j2"].state) == (
            JobState.COMPLETE,
            JobState.RUNNING,
        )
        assert loaded.running_tries == [("j2", 1, j.boot_id)]
        # refused as a whole: j3 is not RUNNING, so j4 does not start either
        with pytest.raises(IllegalTransition):
            await _finish(j, "R1", "j3", [("j4", 1, 1)])
        loaded = await j.load_request("R1")
        assert loaded is not None
        assert (loaded.jobs["j3"].state, loaded.jobs["j4"].state) == (
            JobState.PENDING,
            JobState.PENDING,
        )
    finally:
        await j.close()


async def test_checkpoints_run_beside_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "INTERVAL", 0.02)
    j = await _journal(tmp_path / "j.db")
    try:
        auto = await run_in_connection_thread(
            j._writer_db, lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert auto == checkpoint.WRITER_PAGES
        ckpt = j._checkpointer
        assert ckpt is not None
        await j.create_request(make_record("R1"), make_chain(50))
        await _until(lambda: ckpt.checkpoints > 0)
        idle = ckpt.checkpoints
        await asyncio.sleep(0.1)
        assert ckpt.checkpoints == idle  # nothing committed: no checkpoint
    finally:
        await j.close()
    # what the checkpoints copied is in the database file itself
    conn = sqlite3.connect(f"file:{tmp_path / 'j.db'}?immutable=1", uri=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 50
    finally:
        conn.close()


async def test_a_failing_checkpoint_makes_the_journal_unhealthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that refuses the database file is not easily made here: the checkpoint's
    statement is replaced by one that fails as SQLite does, then by the real one again."""
    monkeypatch.setattr(checkpoint, "INTERVAL", 0.02)
    real = checkpoint._checkpoint

    def broken(conn: sqlite3.Connection) -> tuple[int, int, int]:
        raise sqlite3.OperationalError("disk I/O error")

    j = await _journal(tmp_path / "j.db")
    try:
        monkeypatch.setattr(checkpoint, "_checkpoint", broken)
        await j.create_request(make_record("R1"), make_chain(3))
        await _until(lambda: not j.stats.healthy)
        assert "disk I/O error" in j.stats.last_error
        await j.job_started("R1", "j1", 1, 1, T0)  # commits still go to the WAL
        monkeypatch.setattr(checkpoint, "_checkpoint", real)
        await j.job_started("R1", "j2", 1, 1, T0)
        await _until(lambda: j.stats.healthy)
    finally:
        await j.close()


async def test_a_failed_checkpoint_is_retried_without_new_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault clears after the last commit: health must recover by itself (the
    checkpointer tries again while it is failing, not only when something commits)."""
    monkeypatch.setattr(checkpoint, "INTERVAL", 0.02)
    real = checkpoint._checkpoint

    def broken(conn: sqlite3.Connection) -> tuple[int, int, int]:
        raise sqlite3.OperationalError("database or disk is full")

    j = await _journal(tmp_path / "j.db")
    try:
        monkeypatch.setattr(checkpoint, "_checkpoint", broken)
        await j.create_request(make_record("R1"), make_chain(3))
        await _until(lambda: not j.stats.healthy)
        commits = j.stats.commits
        monkeypatch.setattr(checkpoint, "_checkpoint", real)
        await _until(lambda: j.stats.healthy)
        assert j.stats.commits == commits  # recovered with nothing committed since
    finally:
        await j.close()


async def test_finish_order_uses_its_index(tmp_path: Path) -> None:
    """Numbering a completion reads MAX(finish_order) of one request through an index, not
    by scanning the request's jobs (which made a fan-out of n jobs cost n^2)."""
    j = await _journal(tmp_path / "j.db")
    await j.close()
    conn = sqlite3.connect(tmp_path / "j.db")
    try:
        params = {"request_id": "R1", "ends": "[]"}
        plan = [str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + FINISH_JOBS, params)]
    finally:
        conn.close()
    # the highest finish order so far: one uncorrelated subquery (run once), by the index
    assert "SCALAR SUBQUERY 2" in plan and not any("CORRELATED" in p for p in plan), plan
    assert any("jobs_finish_order" in p for p in plan), plan
    assert not any(p.startswith("SCAN jobs") for p in plan), plan


async def test_finish_order_continues_across_shared_writes(tmp_path: Path) -> None:
    """Completions in one shared write are numbered after every earlier one, in the order of
    the write, whatever ends before them (a failed try takes no number)."""
    j = await _journal(tmp_path / "j.db")
    try:
        await j.create_request(make_record("R1"), make_chain(6))
        await j.jobs_started("R1", [(f"j{i}", 1, 1) for i in range(1, 7)], at=T0)
        await j.tries_ended("R1", [_end("j4"), _end("j2")], at=T0)
        failed = TryEnd(
            job_id="j1", try_no=1, log_state=JobState.FAIL, job_state=JobState.FAIL, exit=1
        )
        await j.tries_ended("R1", [failed, _end("j6"), _end("j3")], at=T0 + 1)
        loaded = await j.load_request("R1")
        assert loaded is not None
        assert loaded.completed_order == ["j4", "j2", "j6", "j3"]
        orders = {jid: row.finish_order for jid, row in loaded.jobs.items()}
        assert orders == {"j1": None, "j2": 2, "j3": 4, "j4": 1, "j5": None, "j6": 3}
    finally:
        await j.close()


def _end(jid: str, *, then: tuple[tuple[str, int, int], ...] = ()) -> TryEnd:
    return TryEnd(
        job_id=jid, try_no=1, log_state=JobState.COMPLETE, job_state=JobState.COMPLETE,
        exit=0, stdout=f"out {jid}", outputs={"k": jid}, then_start=then,
    )  # fmt: skip


async def _events_table(path: Path) -> list[tuple[int, str | None, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT seq, job_id, state FROM events WHERE kind = 'job' ORDER BY seq")
        return [(int(s), j, st) for s, j, st in rows]
    finally:
        conn.close()


async def test_many_starts_and_ends_share_one_write(tmp_path: Path) -> None:
    """A fan-out's starts and ends go in one statement per table; the events they return are
    exactly the rows the journal holds (seq included), in order."""
    j = await _journal(tmp_path / "j.db")
    try:
        await j.create_request(make_record("R1"), make_chain(6))
        before = j.stats.commits
        started = await j.jobs_started("R1", [(f"j{i}", 1, 1) for i in range(1, 5)], at=T0)
        ended = await j.tries_ended(
            "R1", [_end("j1"), _end("j2", then=(("j5", 1, 1), ("j6", 1, 1))), _end("j3")], at=T0
        )
        assert j.stats.commits - before == 2
        loaded = await j.load_request("R1")
        assert loaded is not None
        states = {jid: row.state for jid, row in loaded.jobs.items()}
        assert states == {
            "j1": JobState.COMPLETE, "j2": JobState.COMPLETE, "j3": JobState.COMPLETE,
            "j4": JobState.RUNNING, "j5": JobState.RUNNING, "j6": JobState.RUNNING,
        }  # fmt: skip
        assert loaded.jobs["j2"].outputs == {"k": "j2"}
        log = {(r.job_id, r.try_): r.state for r in await j.job_log("R1")}
        assert log[("j1", 1)] == JobState.COMPLETE and log[("j5", 1)] == JobState.RUNNING
        returned = [(e.seq, e.job_id, e.state) for e in started + ended]
        assert returned == await _events_table(tmp_path / "j.db")
        assert [e.job_id for e in ended] == ["j1", "j2", "j3", "j5", "j6"]
    finally:
        await j.close()


@pytest.mark.parametrize(
    ("setup", "write", "message"),
    [
        ("j2 running", "start j1 j2", "not every job was PENDING"),
        ("j1 j2 running", "end j1 j3", "not every job was RUNNING"),
        ("j1 j2 running", "end j1 j2, start j2", "j2 of request R1 is COMPLETE, not PENDING"),
    ],
)
async def test_a_batch_with_one_bad_row_changes_nothing(
    tmp_path: Path, setup: str, write: str, message: str
) -> None:
    j = await _journal(tmp_path / "j.db")
    try:
        await j.create_request(make_record("R1"), make_chain(3))
        for jid in setup.removesuffix(" running").split():
            await j.job_started("R1", jid, 1, 1, T0)
        before = await j.load_request("R1")
        with pytest.raises(IllegalTransition, match=message):
            if write.startswith("start"):
                await j.jobs_started("R1", [(x, 1, 1) for x in write.split()[1:]], at=T0)
            else:
                ends, _, starts = write.partition(", start ")
                then = tuple((x, 2, 1) for x in starts.split())
                ids = ends.removeprefix("end ").split()
                await j.tries_ended("R1", [_end(ids[0]), _end(ids[1], then=then)], at=T0)
        after = await j.load_request("R1")
        assert before is not None and after is not None
        assert after.jobs == before.jobs
        assert j.stats.healthy
    finally:
        await j.close()


async def test_an_sqlite_too_old_for_the_statements_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.journal import store

    monkeypatch.setattr(store, "MIN_SQLITE", (99, 0, 0))
    with pytest.raises(JournalError, match=r"too old for the journal \(it needs 99\.0\.0"):
        await Journal.open(tmp_path / "j.db")
    assert not (tmp_path / "j.db").exists()
