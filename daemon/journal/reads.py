"""The journal's reads: functions of a `sqlite3.Connection`, run in the reader's thread.

Reads that take several queries run inside one read transaction, so that they see one
snapshot (WAL readers never block the writer, nor are blocked by it).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from daemon.chain import Chain
from daemon.journal import queries as q
from daemon.journal import rows
from daemon.journal.rows import LoadedRequest, RequestFilter
from daemon.model import (
    Event,
    JobLogRow,
    JobState,
    JobView,
    RequestDetail,
    RequestState,
    RequestView,
)

T = TypeVar("T")


def snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute(q.BEGIN_READ)
    try:
        return fn(conn)
    finally:
        conn.execute(q.ROLLBACK)


def _chain(conn: sqlite3.Connection, request_id: str) -> Chain:
    key = {"request_id": request_id}
    chain = rows.chain_from_json(conn.execute(q.GET_CHAIN, key).fetchone()[0])
    for (text,) in conn.execute(q.GET_PATCHES, key):
        chain.apply(rows.patch_from_json(text))
    return chain


def _jobs(conn: sqlite3.Connection, request_id: str) -> dict[str, rows.JobRow]:
    return rows.jobs_from_json(conn.execute(q.GET_JOBS, {"request_id": request_id}).fetchone()[0])


def load_request(conn: sqlite3.Connection, request_id: str) -> LoadedRequest | None:
    key = {"request_id": request_id}
    row = conn.execute(q.GET_REQUEST, key).fetchone()
    if row is None:
        return None
    jobs = _jobs(conn, request_id)
    done = [j for j in jobs.values() if j.state == JobState.COMPLETE and j.finish_order is not None]
    done.sort(key=lambda j: j.finish_order or 0)
    return LoadedRequest(
        record=rows.request_from_row(row),
        chain=_chain(conn, request_id),
        jobs=jobs,
        scope_tries={r["scope_id"]: r["tries"] for r in conn.execute(q.GET_SCOPE_TRIES, key)},
        completed_order=[j.job_id for j in done],
        running_tries=[
            (r["job_id"], r["try"], r["boot_id"]) for r in conn.execute(q.RUNNING_TRIES, key)
        ],
        failed=failed_tries(conn, request_id),
    )


def get_view(conn: sqlite3.Connection, request_id: str) -> RequestView | None:
    row = conn.execute(q.GET_VIEW, {"request_id": request_id}).fetchone()
    return None if row is None else rows.view_from_row(row)


def get_request(conn: sqlite3.Connection, request_id: str) -> RequestDetail | None:
    """The request, its jobs and edges, from ONE statement (GET_DETAIL): one snapshot with no
    transaction of its own (no `snapshot` needed)."""
    row = conn.execute(q.GET_DETAIL, {"request_id": request_id}).fetchone()
    if row is None:
        return None
    view = rows.view_from_row(row)
    chain = rows.chain_from_json(row["chain"])
    for patch in rows.patches_from_json(row["patches"]):
        chain.apply(patch)
    states = rows.jobs_from_json(row["jobs"])
    jobs = []
    for job in chain.jobs.values():
        state = states.get(job.id)
        jobs.append(
            JobView(
                id=job.id,
                name=job.name,
                type=job.type,
                state=state.state if state else JobState.PENDING,
                tries=state.tries if state else 0,
                sequence_id=job.scope,
                kind=job.kind.value,
                args=dict(job.args),
            )
        )
    return RequestDetail(**msgspec.structs.asdict(view), jobs=jobs, edges=list(chain.edges))


def unfinished_request_ids(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute(q.UNFINISHED_REQUESTS)]


def stale_running_tries(conn: sqlite3.Connection, boot_id: str) -> list[tuple[str, str, int, str]]:
    rows = conn.execute(q.STALE_RUNNING_TRIES, {"boot_id": boot_id})
    return [(r["request_id"], r["job_id"], r["try"], r["boot_id"]) for r in rows]


def filter_params(f: RequestFilter) -> dict[str, Any]:
    return {
        "type": f.type,
        "user": f.user,
        "states": rows.to_json([RequestState(s).value for s in f.states]),
        "args": rows.to_json(f.args),
        "since": f.since,
        "until": f.until,
        "limit": f.limit,
        "offset": f.offset,
    }


def find_requests(conn: sqlite3.Connection, params: dict[str, Any]) -> list[RequestView]:
    return [rows.view_from_row(r) for r in conn.execute(q.FIND_REQUESTS, params)]


def job_log(conn: sqlite3.Connection, request_id: str, job_id: str | None) -> list[JobLogRow]:
    params = {"request_id": request_id, "job_id": job_id}
    return [rows.log_from_row(r) for r in conn.execute(q.JOB_LOG, params)]


def failed_tries(conn: sqlite3.Connection, request_id: str) -> dict[tuple[str, int], int]:
    rows_ = conn.execute(q.FAILED_TRIES, {"request_id": request_id})
    return {(str(job_id), int(seq)): int(n) for job_id, seq, n in rows_}


def events_after(
    conn: sqlite3.Connection, request_id: str, after_seq: int, limit: int
) -> list[Event]:
    params = {"request_id": request_id, "after": after_seq, "limit": limit}
    return [rows.event_from_row(r) for r in conn.execute(q.EVENTS_AFTER, params)]


def backlog(
    conn: sqlite3.Connection, request_id: str, after_seq: int, limit: int
) -> tuple[list[Event], bool] | None:
    """Events after `after_seq` and whether the request is finished, as of one snapshot (run
    it in `snapshot`); None if there is no such request."""
    row = conn.execute(q.REQUEST_STATE, {"request_id": request_id}).fetchone()
    if row is None:
        return None
    return events_after(conn, request_id, after_seq, limit), RequestState(row[0]).finished


def find_idempotent(conn: sqlite3.Connection, key: str) -> tuple[str, str] | None:
    row = conn.execute(q.FIND_IDEMPOTENT, {"key": key}).fetchone()
    return None if row is None else (str(row[0]), str(row[1] or ""))


def count_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in conn.execute(q.COUNT_BY_STATE)}


def integrity_check(conn: sqlite3.Connection) -> str:
    return "\n".join(str(r[0]) for r in conn.execute(q.INTEGRITY_CHECK))


def backup(conn: sqlite3.Connection, dest: Path) -> None:
    """Copy the database to `dest` (mode 0600) in one step, from one consistent snapshot.

    The copy goes to a temporary file next to `dest`, renamed over it when complete, so a
    failed backup never leaves a half-written file under the final name.
    """
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        target = sqlite3.connect(tmp)
        try:
            conn.backup(target)  # pages=-1: every page in one step, from one read snapshot
        finally:
            target.close()
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
