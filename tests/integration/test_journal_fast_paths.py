"""The journal's fast paths on a real file: checkpoints off the writer's path, a job's COMPLETE
row and its successors' RUNNING rows in one commit, the index behind finish order."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daemon.journal import Journal, checkpoint
from daemon.journal.errors import IllegalTransition
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
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT COALESCE(MAX(finish_order), 0) + 1 FROM jobs"
            " WHERE request_id = 'R1'"
        ).fetchall()
    finally:
        conn.close()
    assert any("jobs_finish_order" in str(row[-1]) for row in plan), plan
