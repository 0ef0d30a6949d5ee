"""The journal's API reads on a real file: small ones answer on the loop's thread, large ones in
the reader thread, and both give what the reads module gives on a connection of its own."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.chain import ChainJob, ChainPatch, JobKind, Scope
from daemon.journal import Journal, RequestFilter, reads, schema
from daemon.journal.inline import InlineReader
from daemon.model import JobState
from tests.integration.journal_helpers import T0, make_chain, make_record, open_journal, run_job

BIG = 2_000  # jobs: a detail of ~50,000 SQLite instructions, over the inline budget


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(tmp_path / "journal.db")
    await j.create_request(make_record("SMALL"), make_chain(3, deferred=("j2",)))
    await run_job(j, "SMALL", "j1")
    # two expansions, the second of a node the first added: applied out of order they fail
    await j.apply_patch("SMALL", _patch("j2", "d1", JobKind.DEFERRED, 10), at=T0 + 2)
    await j.apply_patch("SMALL", _patch("d1", "x1", JobKind.JOB, 11), at=T0 + 3)
    await j.create_request(make_record("BIG", created_at=T0 + 1), make_chain(BIG))
    for n in range(1, 4):
        await run_job(j, "BIG", f"j{n}")
    yield j
    await j.close()


def _patch(deferred: str, new: str, kind: JobKind, next_id: int) -> ChainPatch:
    return ChainPatch(
        deferred=deferred,
        jobs=[ChainJob(id=new, name=new, type="noop", scope=f"s-{new}", kind=kind)],
        edges=[(deferred, new)],
        scopes=[Scope(id=f"s-{new}", sequence="each", parent="s1")],
        next_id=next_id,
    )


def _inline(journal: Journal) -> InlineReader:
    reader = journal._inline
    assert reader is not None
    return reader


ReadCase = tuple[
    str, Callable[[Journal], Awaitable[Any]], Callable[[sqlite3.Connection], Any], bool
]
FILTER = RequestFilter(limit=10)
CASES: list[ReadCase] = [
    # name, the journal's read, the same read on a plain connection, answered inline
    (
        "detail of a small request",
        lambda j: j.get_request("SMALL"),
        lambda c: reads.get_request(c, "SMALL"),
        True,
    ),
    (
        "detail of a large request",
        lambda j: j.get_request("BIG"),
        lambda c: reads.get_request(c, "BIG"),
        False,
    ),
    ("a missing request", lambda j: j.get_request("NONE"), lambda c: None, True),
    ("a view", lambda j: j.get_view("SMALL"), lambda c: reads.get_view(c, "SMALL"), True),
    # a view counts the request's jobs: a large request's is over the budget too
    ("a large view", lambda j: j.get_view("BIG"), lambda c: reads.get_view(c, "BIG"), False),
    (
        "a page of requests, one large",
        lambda j: j.find_requests(FILTER),
        lambda c: reads.find_requests(c, reads.filter_params(FILTER)),
        False,
    ),
    ("counts by state", lambda j: j.count_by_state(), reads.count_by_state, True),
    (
        "a job's log",
        lambda j: j.job_log("BIG", "j2"),
        lambda c: reads.job_log(c, "BIG", "j2"),
        True,
    ),
    (
        "a backlog of events",
        lambda j: j.backlog("SMALL", 0, 100),
        lambda c: reads.snapshot(c, lambda s: reads.backlog(s, "SMALL", 0, 100)),
        True,
    ),
]


@pytest.mark.parametrize(
    ("name", "read", "expected", "inline_ok"), CASES, ids=[c[0] for c in CASES]
)
async def test_reads_give_what_the_reads_module_gives(
    journal: Journal,
    name: str,
    read: Callable[[Journal], Awaitable[Any]],
    expected: Callable[[sqlite3.Connection], Any],
    inline_ok: bool,
) -> None:
    reader = _inline(journal)
    before = (reader.inline_reads, reader.sent_to_thread)
    got = await read(journal)
    conn = sqlite3.connect(journal.path, isolation_level=None)
    try:
        schema.configure_reader(conn)
        assert got == expected(conn)
    finally:
        conn.close()
    moved = (reader.inline_reads - before[0], reader.sent_to_thread - before[1])
    assert moved == ((1, 0) if inline_ok else (0, 1))
    assert not reader._conn.in_transaction


async def test_expansions_come_back_in_the_order_they_were_applied(journal: Journal) -> None:
    detail = await journal.get_request("SMALL")
    assert detail is not None
    assert [(v.id, v.kind, v.state) for v in detail.jobs] == [
        ("j1", "job", JobState.COMPLETE),
        ("j2", "deferred", JobState.COMPLETE),
        ("j3", "job", JobState.PENDING),
        ("d1", "deferred", JobState.COMPLETE),
        ("x1", "job", JobState.PENDING),
    ]


async def test_a_large_read_goes_to_the_thread_at_once_the_next_time(journal: Journal) -> None:
    reader = _inline(journal)
    first = await journal.get_request("BIG")
    assert first is not None and len(first.jobs) == BIG
    assert reader.sent_to_thread == 1
    # remembered: not tried on the loop again (no instructions spent), same answer
    ticks_before = reader._ticks
    assert await journal.get_request("BIG") == first
    assert reader.sent_to_thread == 2 and reader._ticks == ticks_before
    # the request's other, small reads still answer inline
    assert await journal.job_log("BIG", "j1") != []
    assert reader.inline_reads == 1


async def test_a_long_backlog_pages_in_the_thread_after_the_first_full_page(
    journal: Journal,
) -> None:
    reader = _inline(journal)
    starts = [(f"j{n}", 1, 1) for n in range(4, 1504)]  # 1,500 more events, in one write
    await journal.jobs_started("BIG", starts, at=T0 + 5)
    first = await journal.backlog("BIG", 0, 1000)  # ~14,000 instructions: too large here
    assert first is not None and len(first[0]) == 1000 and reader.sent_to_thread == 1
    ticks = reader._ticks
    rest = await journal.backlog("BIG", first[0][-1].seq, 1000)  # straight to the thread
    assert rest is not None and len(rest[0]) == 7 + 1500 - 1000
    assert reader.sent_to_thread == 2 and reader._ticks == ticks
    # a small page of the same request is another key: it answers on the loop
    assert await journal.events_after("BIG", 0, 10) == first[0][:10]
    assert reader.inline_reads == 1


async def test_reads_after_close_are_refused(journal: Journal) -> None:
    await journal.close()
    with pytest.raises(Exception, match="closed"):
        await journal.get_request("SMALL")
