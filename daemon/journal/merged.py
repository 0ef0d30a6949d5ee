"""Single-try ends of several requests, merged into one statement per table.

A chain in a line ends one try at a time: its write (the try's end, and the starts of the
successors it releases, `TryEnd.then_start`) is small and of one request. With many such
chains running, a group commit holds a dozen or more of these writes, each of six statements,
and every statement the writer thread runs gives up the GIL for SQLite's step and must get it
back from the busy event loop. `TryEndWrite` is such a write that also says what it writes, so
that the writer can run several of a batch as five set-based statements over all of their
rows (`run_merged`; which ones: `daemon.journal.writer.merge_plan`), the way a fan-out's ends
already share their statements.

Merging changes nothing the journal ends up holding: the rows, the finish orders (each
request's completions are numbered after its highest so far, in the order of the writes) and
the events (numbered in the order of the writes, each write's end before its starts) are what
running the writes one after the other gives. Two writes of one group cannot touch the same job
(a job ended here was started by an earlier commit; a job started here is PENDING), so the
order of the statements does not matter either. Every compare-and-set still holds: if a count
of changed rows is not the number of rows asked for, the merged write raises, and the writer
runs the batch again with each write alone in a savepoint (`Writer`), which finds and refuses
only the one at fault.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.journal import queries as q
from daemon.journal import rows
from daemon.journal.errors import IllegalTransition
from daemon.journal.rows import TryEnd
from daemon.journal.writes import (
    changed_rows,
    combine,
    end_rows,
    make_jobs_started,
    try_ended_write,
)
from daemon.model import Event, JobState


class TryEndWrite:
    """One try's end (and the starts it brings) for the group-commit writer: a write like any
    other when run alone (`single`), and mergeable with others (`run_merged`)."""

    __slots__ = ("at", "boot_id", "detail", "end", "outputs", "request_id", "single")

    def __init__(
        self,
        request_id: str,
        end: TryEnd,
        at: float,
        boot_id: str,
        detail: str,
        outputs: str | None,
        single: Callable[[sqlite3.Connection], list[Event]],
    ) -> None:
        self.request_id = request_id
        self.end = end
        self.at = at
        self.boot_id = boot_id
        self.detail = detail
        self.outputs = outputs  # JSON text if the try COMPLETEd, else None
        self.single = single

    def __call__(self, conn: sqlite3.Connection) -> list[Event]:
        return self.single(conn)


def make_try_end(request_id: str, end: TryEnd, at: float, boot_id: str) -> TryEndWrite:
    """The write of one try's end and the starts it brings (checked and encoded now, once
    for both ways of running it)."""
    job, log, event = end_rows(request_id, end, at)
    single = try_ended_write(request_id, end, job, log, event)
    if end.then_start:
        single = combine(single, make_jobs_started(request_id, end.then_start, at, boot_id))
    outputs = job["outputs"] if end.job_state == JobState.COMPLETE else None
    return TryEndWrite(request_id, end, at, boot_id, event["detail"], outputs, single)


def run_merged(conn: sqlite3.Connection, writes: Sequence[TryEndWrite]) -> list[list[Event]]:
    """Run several writes as one: the events of each, in order. Raises IllegalTransition if
    any compare-and-set does not hold (nothing is then to be kept of it: the caller rolls the
    transaction back)."""
    ends: list[list[Any]] = []
    logs: list[list[Any]] = []
    starts: list[list[Any]] = []
    events: list[list[Any]] = []
    completions: dict[str, int] = {}
    boot_id = writes[0].boot_id
    for w in writes:
        e, rid, at = w.end, w.request_id, w.at
        if w.outputs is not None:
            n = completions[rid] = completions.get(rid, 0) + 1
            ends.append([rid, e.job_id, e.job_state.value, w.outputs, n])
        else:
            ends.append([rid, e.job_id, e.job_state.value, None, None])
        logs.append(
            [rid, e.job_id, e.try_no, e.log_state.value, e.exit, e.error, e.stdout, e.stderr, at]
        )
        events.append([rid, "job", e.job_state.value, at, e.job_id, e.try_no, w.detail])
        for job_id, try_no, seq_try in e.then_start:
            starts.append([rid, job_id, try_no, seq_try, at])
            events.append([rid, "job", "RUNNING", at, job_id, try_no, ""])
        if w.boot_id != boot_id:
            raise IllegalTransition("writes of different boots cannot be merged")
    if changed_rows(conn, q.FINISH_JOBS_MANY, {"ends": rows.to_json(ends)}) != len(ends):
        raise IllegalTransition("merged try ends: not every job was RUNNING")
    if changed_rows(conn, q.FINISH_LOGS_MANY, {"logs": rows.to_json(logs)}) != len(logs):
        raise IllegalTransition("merged try ends: not every try was RUNNING")
    if starts:
        params = {"starts": rows.to_json(starts), "boot_id": boot_id}
        if changed_rows(conn, q.START_JOBS_MANY, params) != len(starts):
            raise IllegalTransition("merged try ends: not every job to start was PENDING")
        try:
            conn.execute(q.INSERT_LOGS_MANY, params)
        except sqlite3.IntegrityError as exc:
            raise IllegalTransition("merged try ends: a try was already journaled") from exc
    last = conn.execute(q.INSERT_EVENTS_MANY, {"events": rows.to_json(events)}).lastrowid
    assert last is not None
    first = last - len(events) + 1  # numbered consecutively, in array order
    out: list[list[Event]] = []
    i = 0
    for w in writes:
        k = 1 + len(w.end.then_start)
        out.append([_event(first + j, events[j]) for j in range(i, i + k)])
        i += k
    return out


def _event(seq: int, row: list[Any]) -> Event:
    rid, kind, state, at, job_id, try_no, detail = row
    return rows.new_event(
        seq, rid, kind, state, datetime.fromtimestamp(at, UTC), job_id, try_no, detail
    )
