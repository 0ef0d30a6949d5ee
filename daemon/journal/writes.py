"""The journal's writes, as functions the group-commit writer runs inside its transaction.

Each `make_*` function checks its arguments and encodes them now (in the caller's task, so a
later change to a caller's object cannot leak in), and returns a `Write`: a function of the
`sqlite3.Connection` that runs in the writer's thread inside a savepoint. Every state change
is a compare-and-set: the UPDATE names the states it may leave; a row count of 0 raises
`IllegalTransition` (and rolls back only that write). Writes return the events they appended.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

from daemon.chain import Chain, ChainJob, ChainPatch
from daemon.journal import queries as q
from daemon.journal import rows
from daemon.journal.errors import AlreadyExists, IllegalTransition, JournalError
from daemon.journal.rows import RequestRecord, TryEnd
from daemon.model import Event, JobState, RequestState

Write = Callable[[sqlite3.Connection], Any]

#: States a try's log row can end in, and states a job can be left in after a try.
LOG_END_STATES = frozenset(
    {JobState.COMPLETE, JobState.FAIL, JobState.STOPPED, JobState.INTERRUPTED}
)
JOB_AFTER_TRY = frozenset(
    {JobState.PENDING, JobState.COMPLETE, JobState.FAIL, JobState.STOPPED, JobState.SKIPPED}
)
_DETAIL_MAX = 200


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def _event(
    conn: sqlite3.Connection,
    request_id: str,
    kind: str,
    state: str,
    at: float,
    *,
    job_id: str | None = None,
    try_: int | None = None,
    detail: str = "",
) -> Event:
    params = rows.event_params(request_id, kind, state, at, job_id, try_, _short(detail))
    cur = conn.execute(q.INSERT_EVENT, params)
    assert cur.lastrowid is not None
    return rows.event_from_params(cur.lastrowid, params)


def _jobs_params(request_id: str, jobs: Iterable[ChainJob]) -> dict[str, Any]:
    """INSERT_JOBS's parameters: every job in one JSON array."""
    rows_ = [[j.id, j.name, j.type, j.scope, j.kind.value] for j in jobs]
    return {"request_id": request_id, "jobs": rows.to_json(rows_), "n": len(rows_)}


def _insert_jobs(conn: sqlite3.Connection, params: dict[str, Any]) -> None:
    if params["n"]:
        conn.execute(q.INSERT_JOBS, {"request_id": params["request_id"], "jobs": params["jobs"]})


def _refuse_request(
    conn: sqlite3.Connection, request_id: str, wanted: str, expect: Collection[str]
) -> NoReturn:
    row = conn.execute(q.REQUEST_STATE, {"request_id": request_id}).fetchone()
    if row is None:
        raise IllegalTransition(f"no request {request_id}")
    allowed = "/".join(sorted(expect)) or "nothing"
    raise IllegalTransition(
        f"request {request_id} is {row[0]}, not {allowed}: it cannot become {wanted}"
    )


def _refuse_job(
    conn: sqlite3.Connection, request_id: str, job_id: str, wanted: str, expect: Collection[str]
) -> NoReturn:
    row = conn.execute(q.JOB_STATE, {"request_id": request_id, "job_id": job_id}).fetchone()
    if row is None:
        raise IllegalTransition(f"request {request_id} has no job {job_id}")
    allowed = "/".join(sorted(expect))
    raise IllegalTransition(
        f"job {job_id} of request {request_id} is {row[0]}, not {allowed}:"
        f" it cannot become {wanted}"
    )


def _refuse_try(conn: sqlite3.Connection, request_id: str, job_id: str, try_no: int) -> NoReturn:
    key = {"request_id": request_id, "job_id": job_id, "try": try_no}
    row = conn.execute(q.LOG_STATE, key).fetchone()
    if row is None:
        raise IllegalTransition(f"job {job_id} of request {request_id} has no try {try_no}")
    raise IllegalTransition(
        f"try {try_no} of job {job_id} of request {request_id} is {row[0]}, not RUNNING"
    )


def make_start_boot(boot_id: str, pid: int, version: str, at: float) -> Write:
    params = {"id": boot_id, "pid": pid, "version": version, "started_at": at}

    def write(conn: sqlite3.Connection) -> str:
        conn.execute(q.INSERT_BOOT, params)
        return boot_id

    return write


def make_create_request(
    rec: RequestRecord, chain: Chain, idempotency_key: str | None, body_hash: str | None
) -> Write:
    request = rows.request_params(rec, idempotency_key, body_hash)
    chain_row = {"request_id": rec.id, "chain": rows.to_json(chain)}
    jobs = _jobs_params(rec.id, chain.jobs.values())

    def write(conn: sqlite3.Connection) -> list[Event]:
        try:
            conn.execute(q.INSERT_REQUEST, request)
        except sqlite3.IntegrityError as exc:
            if idempotency_key is not None:
                found = conn.execute(q.FIND_IDEMPOTENT, {"key": idempotency_key}).fetchone()
                if found is not None:
                    raise AlreadyExists(
                        f"idempotency key {idempotency_key!r} was used by request {found[0]}"
                    ) from exc
            raise AlreadyExists(f"request {rec.id} already exists") from exc
        conn.execute(q.INSERT_CHAIN, chain_row)
        _insert_jobs(conn, jobs)
        return [_event(conn, rec.id, "request", rec.state.value, rec.created_at, detail="created")]

    return write


def make_set_request_state(
    request_id: str,
    state: RequestState,
    expect: Collection[RequestState],
    at: float,
    reason: str,
) -> Write:
    allowed = sorted({RequestState(s).value for s in expect})
    new_state = RequestState(state).value
    params = {
        "request_id": request_id,
        "state": new_state,
        "reason": reason,
        "at": at,
        "expect": rows.to_json(allowed),
    }

    def write(conn: sqlite3.Connection) -> list[Event]:
        if conn.execute(q.SET_REQUEST_STATE, params).rowcount != 1:
            _refuse_request(conn, request_id, new_state, allowed)
        return [_event(conn, request_id, "request", new_state, at, detail=reason)]

    return write


def make_job_started(
    request_id: str, job_id: str, try_no: int, seq_try: int, at: float, boot_id: str
) -> Write:
    if try_no < 1 or seq_try < 1:
        raise ValueError("try numbers start at 1")
    if not boot_id:
        raise JournalError("record a boot (Journal.start_boot) before starting jobs")
    key = {"request_id": request_id, "job_id": job_id}
    start = {**key, "try": try_no, "seq_try": seq_try}
    log = {**start, "at": at, "boot_id": boot_id}

    def write(conn: sqlite3.Connection) -> list[Event]:
        if conn.execute(q.START_JOB, start).rowcount != 1:
            _refuse_job(conn, request_id, job_id, "RUNNING", ["PENDING"])
        try:
            conn.execute(q.INSERT_LOG, log)
        except sqlite3.IntegrityError as exc:
            raise IllegalTransition(
                f"try {try_no} of job {job_id} of request {request_id} was already journaled"
            ) from exc
        return [_event(conn, request_id, "job", "RUNNING", at, job_id=job_id, try_=try_no)]

    return write


def end_rows(
    request_id: str, end: TryEnd, at: float
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The jobs row, job_log row and event parameters of a try's end (checked and encoded)."""
    if end.log_state not in LOG_END_STATES:
        raise ValueError(f"a try cannot end in state {end.log_state}")
    if end.job_state not in JOB_AFTER_TRY:
        raise ValueError(f"a job cannot be left in state {end.job_state} after a try")
    key = {"request_id": request_id, "job_id": end.job_id}
    job = {**key, "state": end.job_state.value, "outputs": rows.to_json(end.outputs)}
    log: dict[str, Any] = {**key, "try": end.try_no, "state": end.log_state.value}
    log |= {"exit": end.exit, "error": end.error, "stdout": end.stdout, "stderr": end.stderr}
    log["at"] = at
    state = end.job_state.value
    event = rows.event_params(request_id, "job", state, at, end.job_id, end.try_no, _detail(end))
    return job, log, event


def make_try_ended(request_id: str, end: TryEnd, at: float) -> Write:
    """CAS the job RUNNING -> end.job_state and its try's log row -> end.log_state (the
    starts of `end.then_start` are not written here: see `make_tries_ended`)."""
    return try_ended_write(request_id, end, *end_rows(request_id, end, at))


def try_ended_write(
    request_id: str, end: TryEnd, job: dict[str, Any], log: dict[str, Any], event: dict[str, Any]
) -> Write:
    """`make_try_ended` over rows `end_rows` made."""
    job_id, job_state = end.job_id, end.job_state

    def write(conn: sqlite3.Connection) -> list[Event]:
        if conn.execute(q.FINISH_JOB, job).rowcount != 1:
            _refuse_job(conn, request_id, job_id, job_state.value, ["RUNNING"])
        if conn.execute(q.FINISH_LOG, log).rowcount != 1:
            _refuse_try(conn, request_id, job_id, end.try_no)
        cur = conn.execute(q.INSERT_EVENT, event)
        assert cur.lastrowid is not None
        return [rows.event_from_params(cur.lastrowid, event)]

    return write


def _events_of(
    conn: sqlite3.Connection, request_id: str, at: float, events: list[list[Any]]
) -> list[Event]:
    """Append events given as [kind, state, job_id, try, detail] with one statement, and
    return them as the journal numbered them (AUTOINCREMENT, consecutively: this connection is
    the only writer and the statement inserts in array order)."""
    params = {"request_id": request_id, "at": at, "events": rows.to_json(events)}
    last = conn.execute(q.INSERT_EVENTS, params).lastrowid  # the sqlite3 module reads it
    assert last is not None
    first = last - len(events) + 1
    when = datetime.fromtimestamp(at, UTC)
    return [
        rows.new_event(first + i, request_id, kind, state, when, job_id, try_no, detail)
        for i, (kind, state, job_id, try_no, detail) in enumerate(events)
    ]


def changed_rows(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> int:
    """Run an INSERT/UPDATE and return the rows it changed. The sqlite3 module gives no
    rowcount for a statement that starts with WITH, and `SELECT changes()` would be one more
    statement (and one more GIL hand-off in the writer thread): the connection's running
    total is an attribute read. (No trigger of the schema changes rows: the total counts only
    this statement's.)"""
    before = conn.total_changes
    conn.execute(sql, params)
    return conn.total_changes - before


def _detail(end: TryEnd) -> str:
    detail = "" if end.log_state == end.job_state else f"try {end.log_state.value}"
    if end.error:
        detail = f"{detail}: {end.error}" if detail else end.error
    return _short(detail)


def make_tries_ended(request_id: str, ends: Sequence[TryEnd], at: float, boot_id: str) -> Write:
    """The ends of several tries (and the starts each brings, see `TryEnd.then_start`) with
    one statement per table: the fast path of a fan-out. A compare-and-set that does not hold
    for every row refuses the whole write (the caller writes them one by one to find which)."""
    jobs: list[list[Any]] = []
    logs: list[list[Any]] = []
    events: list[list[Any]] = []
    completed = 0
    for e in ends:
        if e.log_state not in LOG_END_STATES:
            raise ValueError(f"a try cannot end in state {e.log_state}")
        if e.job_state not in JOB_AFTER_TRY:
            raise ValueError(f"a job cannot be left in state {e.job_state} after a try")
        state = e.job_state.value
        if e.job_state == JobState.COMPLETE:
            completed += 1
            jobs.append([e.job_id, state, rows.to_json(e.outputs), completed])
        else:
            jobs.append([e.job_id, state, None, None])
        logs.append([e.job_id, e.try_no, e.log_state.value, e.exit, e.error, e.stdout, e.stderr])
        events.append(["job", state, e.job_id, e.try_no, _detail(e)])
    key = {"request_id": request_id}
    finish = {**key, "ends": rows.to_json(jobs)}
    finish_logs = {**key, "logs": rows.to_json(logs), "at": at}
    starts = [s for e in ends for s in e.then_start]
    then = make_jobs_started(request_id, starts, at, boot_id) if starts else None
    ids = ", ".join(e.job_id for e in ends[:5]) + (", ..." if len(ends) > 5 else "")

    def write(conn: sqlite3.Connection) -> list[Event]:
        if changed_rows(conn, q.FINISH_JOBS, finish) != len(jobs):
            raise IllegalTransition(f"request {request_id}: not every job was RUNNING ({ids})")
        if changed_rows(conn, q.FINISH_LOGS, finish_logs) != len(logs):
            raise IllegalTransition(f"request {request_id}: not every try was RUNNING ({ids})")
        out = _events_of(conn, request_id, at, events)
        if then is not None:
            out.extend(then(conn))
        return out

    return write


def make_jobs_started(
    request_id: str, starts: Sequence[tuple[str, int, int]], at: float, boot_id: str
) -> Write:
    """`make_job_started` for several (job id, try, seq_try), one statement per table; all
    start or none does."""
    if len(starts) == 1:
        (job_id, try_no, seq_try) = starts[0]
        return make_job_started(request_id, job_id, try_no, seq_try, at, boot_id)
    if any(t < 1 or seq < 1 for _, t, seq in starts):
        raise ValueError("try numbers start at 1")
    if not boot_id:
        raise JournalError("record a boot (Journal.start_boot) before starting jobs")
    params = {
        "request_id": request_id,
        "starts": rows.to_json([[j, t, seq] for j, t, seq in starts]),
        "at": at,
        "boot_id": boot_id,
    }
    events: list[list[Any]] = [["job", "RUNNING", j, t, ""] for j, t, _ in starts]
    ids = ", ".join(j for j, _, _ in starts[:5]) + (", ..." if len(starts) > 5 else "")

    def write(conn: sqlite3.Connection) -> list[Event]:
        if changed_rows(conn, q.START_JOBS, params) != len(starts):
            raise IllegalTransition(f"request {request_id}: not every job was PENDING ({ids})")
        try:
            conn.execute(q.INSERT_LOGS, params)
        except sqlite3.IntegrityError as exc:
            raise IllegalTransition(
                f"request {request_id}: a try was already journaled ({ids})"
            ) from exc
        return _events_of(conn, request_id, at, events)

    return write


def combine(*parts: Write) -> Write:
    """One write made of several, run in order in the same transaction (and savepoint): all
    of them commit or none does. Returns the events of all, in order."""

    def write(conn: sqlite3.Connection) -> list[Event]:
        events: list[Event] = []
        for part in parts:
            events.extend(part(conn))
        return events

    return write


def make_interrupt_try(
    request_id: str, job_id: str, try_no: int, job_state: JobState, error: str, at: float
) -> Write:
    if job_state not in JOB_AFTER_TRY:
        raise ValueError(f"a job cannot be left in state {job_state} after a try")
    key = {"request_id": request_id, "job_id": job_id}
    log = {**key, "try": try_no, "error": error, "at": at}
    job = {**key, "state": job_state.value}
    detail = f"try INTERRUPTED: {error}" if error else "try INTERRUPTED"

    def write(conn: sqlite3.Connection) -> list[Event]:
        if conn.execute(q.INTERRUPT_LOG, log).rowcount != 1:
            _refuse_try(conn, request_id, job_id, try_no)
        if conn.execute(q.INTERRUPT_JOB, job).rowcount != 1:
            _refuse_job(conn, request_id, job_id, job_state.value, ["RUNNING"])
        event = _event(
            conn, request_id, "job", job_state.value, at, job_id=job_id, try_=try_no, detail=detail
        )
        return [event]

    return write


def make_apply_patch(request_id: str, patch: ChainPatch, at: float) -> Write:
    key = {"request_id": request_id, "job_id": patch.deferred}
    patch_row = {"request_id": request_id, "deferred": patch.deferred, "patch": rows.to_json(patch)}
    jobs = _jobs_params(request_id, patch.jobs)
    detail = f"{patch.deferred}: added {len(patch.jobs)} jobs"

    def write(conn: sqlite3.Connection) -> list[Event]:
        if conn.execute(q.COMPLETE_DEFERRED, key).rowcount != 1:
            _refuse_job(
                conn, request_id, patch.deferred, "COMPLETE (expanded)", ["PENDING", "RUNNING"]
            )
        n = conn.execute(q.NEXT_PATCH_NUMBER, {"request_id": request_id}).fetchone()[0]
        conn.execute(q.INSERT_PATCH, {**patch_row, "n": n})
        try:
            _insert_jobs(conn, jobs)
        except sqlite3.IntegrityError as exc:
            raise IllegalTransition(
                f"expanding {patch.deferred} of request {request_id} adds a job id that exists"
            ) from exc
        return [
            _event(conn, request_id, "expand", "COMPLETE", at, job_id=patch.deferred, detail=detail)
        ]

    return write


def make_reset_jobs(
    request_id: str,
    job_ids: Collection[str],
    scope_id: str | None,
    scope_try: int | None,
    at: float,
) -> Write:
    ids = sorted(set(job_ids))
    if (scope_id is None) != (scope_try is None):
        raise ValueError("scope_id and scope_try go together")
    if scope_try is not None and scope_try < 1:
        raise ValueError("scope tries start at 1")
    params = {"request_id": request_id, "job_ids": rows.to_json(ids)}
    detail = f"{len(ids)} jobs" + (f" of scope {scope_id}, try {scope_try}" if scope_id else "")

    def write(conn: sqlite3.Connection) -> list[Event]:
        if conn.execute(q.RESET_JOBS, params).rowcount != len(ids):
            found = dict(conn.execute(q.JOB_STATES_OF, params).fetchall())
            bad = [
                f"{j} ({found.get(j, 'missing')})" for j in ids if found.get(j) in (None, "RUNNING")
            ]
            raise IllegalTransition(f"cannot reset jobs of request {request_id}: {', '.join(bad)}")
        if scope_id is not None:
            conn.execute(
                q.UPSERT_SCOPE_TRIES,
                {"request_id": request_id, "scope_id": scope_id, "tries": scope_try},
            )
        return [_event(conn, request_id, "reset", "PENDING", at, detail=detail)]

    return write


def make_skip_job(request_id: str, job_id: str, user: str, reason: str, at: float) -> Write:
    key = {"request_id": request_id, "job_id": job_id}
    detail = f"by {user}: {reason}"

    def write(conn: sqlite3.Connection) -> list[Event]:
        if conn.execute(q.SKIP_JOB, key).rowcount != 1:
            _refuse_job(conn, request_id, job_id, "SKIPPED", ["PENDING", "FAIL", "STOPPED"])
        return [_event(conn, request_id, "skip", "SKIPPED", at, job_id=job_id, detail=detail)]

    return write


def make_prune(before: float, batch: int) -> Write:
    if batch < 1:
        raise ValueError("batch must be at least 1")
    params = {"before": before, "batch": batch}

    def write(conn: sqlite3.Connection) -> int:
        return conn.execute(q.PRUNE_FINISHED, params).rowcount

    return write
