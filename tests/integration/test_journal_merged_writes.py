"""Single-try ends of several requests merged into one statement per table, on a real file:
the plan of a batch, and that the journal ends up as running the writes one by one would
leave it (rows, finish orders, events), with refusals isolated."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.journal import Journal, TryEnd
from daemon.journal.errors import IllegalTransition
from daemon.journal.merged import make_try_end
from daemon.journal.writer import merge_plan, run_in_connection_thread
from daemon.model import JobState
from tests.integration.journal_helpers import T0, make_chain, make_record, open_journal


def _end(jid: str, *, state: JobState = JobState.COMPLETE, then: str = "") -> TryEnd:
    return TryEnd(
        job_id=jid, try_no=1, log_state=state, job_state=state,
        exit=0 if state == JobState.COMPLETE else 1, stdout=f"out {jid}",
        outputs={"k": jid} if state == JobState.COMPLETE else {},
        then_start=((then, 1, 1),) if then else (),
    )  # fmt: skip


def _plain(conn: sqlite3.Connection) -> None:
    return None


#: a batch as (kind, request): "end" is a single-try end, "other" any other write (request
#: None: a write of no known request); and the plan expected
PLANS: list[tuple[str, list[tuple[str, str | None]], list[list[int]]]] = [
    ("consecutive ends merge", [("end", "A"), ("end", "B"), ("end", "C")], [[0, 1, 2]]),
    ("an end moves before another request's write",
     [("end", "A"), ("other", "B"), ("end", "C")], [[0, 2], [1]]),
    ("not before a write of its own request: a new group opens",
     [("end", "A"), ("other", "C"), ("end", "C"), ("end", "B")], [[0], [1], [2, 3]]),
    ("nothing moves across a write of no known request",
     [("end", "A"), ("other", None), ("end", "B"), ("end", "C")], [[0], [1], [2, 3]]),
    ("two ends of one request stay in order in the group",
     [("end", "A"), ("end", "A"), ("other", "B")], [[0, 1], [2]]),
    ("other writes alone", [("other", "A"), ("other", "B")], [[0], [1]]),
    ("a lone end", [("other", "A"), ("end", "A")], [[0], [1]]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "batch", "plan"), PLANS, ids=[p[0] for p in PLANS])
def test_merge_plan(name: str, batch: list[tuple[str, str | None]], plan: list[list[int]]) -> None:
    fns: list[Callable[[sqlite3.Connection], Any]] = [
        make_try_end(rid or "?", _end(f"j{i}"), T0, "boot") if kind == "end" else _plain
        for i, (kind, rid) in enumerate(batch)
    ]
    assert merge_plan(fns, [rid for _, rid in batch]) == plan


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(tmp_path / "journal.db")
    for rid in ("R1", "R2", "R3"):
        await j.create_request(make_record(rid), make_chain(4))
        await j.jobs_started(rid, [("j1", 1, 1), ("j2", 1, 1)], at=T0)
    yield j
    await j.close()


async def _statements(journal: Journal) -> list[str]:
    """Record the statements the writer's connection runs from now on."""
    seen: list[str] = []
    await run_in_connection_thread(journal._writer_db, lambda c: c.set_trace_callback(seen.append))
    return seen


def _table(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_ends_of_several_requests_share_their_statements(journal: Journal) -> None:
    seen = await _statements(journal)
    futures = [  # queued in one step of the loop: one batch
        journal.queue_tries_ended("R1", [_end("j1", then="j3")], at=T0 + 1),
        journal.queue_tries_ended("R2", [_end("j2", state=JobState.FAIL)], at=T0 + 2),
        journal.queue_tries_ended("R1", [_end("j2")], at=T0 + 3),
        journal.queue_tries_ended("R3", [_end("j1", then="j3")], at=T0 + 4),
    ]
    results = await asyncio.gather(*futures)
    assert sum("INSERT INTO events" in s for s in seen) == 1, seen  # one merged write
    # the events each write got are the journal's rows, numbered in the order of the writes
    got = [(e.seq, e.request_id, e.job_id, e.state, e.at.timestamp()) for r in results for e in r]
    rows = _table(
        journal.path,
        "SELECT seq, request_id, job_id, state, at FROM events WHERE kind = 'job' AND at > "
        f"{T0} ORDER BY seq",
    )
    assert got == rows
    assert [(e.request_id, e.job_id, e.state) for r in results for e in r] == [
        ("R1", "j1", "COMPLETE"), ("R1", "j3", "RUNNING"), ("R2", "j2", "FAIL"),
        ("R1", "j2", "COMPLETE"), ("R3", "j1", "COMPLETE"), ("R3", "j3", "RUNNING"),
    ]  # fmt: skip
    # finish orders continue per request, in the order of the writes
    r1 = await journal.load_request("R1")
    assert r1 is not None
    assert r1.completed_order == ["j1", "j2"]
    assert (r1.jobs["j1"].outputs, r1.jobs["j3"].state) == ({"k": "j1"}, JobState.RUNNING)
    logs = _table(
        journal.path,
        "SELECT request_id, job_id, try, state, finished_at, stdout, boot_id FROM job_log"
        " ORDER BY request_id, job_id",
    )
    assert ("R1", "j1", 1, "COMPLETE", T0 + 1, "out j1", journal.boot_id) in logs
    assert ("R1", "j3", 1, "RUNNING", None, "", journal.boot_id) in logs
    assert ("R2", "j2", 1, "FAIL", T0 + 2, "out j2", journal.boot_id) in logs
    r2 = await journal.load_request("R2")
    assert r2 is not None and r2.jobs["j2"].finish_order is None


async def test_a_refused_end_fails_alone(journal: Journal) -> None:
    futures = [
        journal.queue_tries_ended("R1", [_end("j1", then="j3")], at=T0 + 1),
        journal.queue_tries_ended("R2", [_end("j4")], at=T0 + 2),  # j4 is not RUNNING
        journal.queue_tries_ended("R3", [_end("j2")], at=T0 + 3),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[1], IllegalTransition)
    assert "j4 of request R2 is PENDING" in str(results[1])
    r1, r3 = await journal.load_request("R1"), await journal.load_request("R3")
    assert r1 is not None and r3 is not None
    assert (r1.jobs["j1"].state, r1.jobs["j3"].state) == (JobState.COMPLETE, JobState.RUNNING)
    assert r3.completed_order == ["j2"]
    assert journal.stats.healthy
