"""The journal's records, and the one place where rows become Structs and back.

Rows come from connections whose `row_factory` is `sqlite3.Row` (access by column name).
Times are float epoch seconds in the database and `datetime`s in the model's wire Structs.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import msgspec

from daemon.chain import Chain, ChainPatch
from daemon.model import (
    Event,
    JobLogRow,
    JobState,
    RequestState,
    RequestView,
    ts_to_dt,
)


class RequestRecord(msgspec.Struct, kw_only=True):
    """A request as the journal keeps it."""

    id: str
    type: str
    user: str
    args: dict[str, Any]
    state: RequestState
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    trace_id: str = ""
    reason: str = ""


class JobRow(msgspec.Struct, kw_only=True):
    """The run state of one job (or deferred node) of a request."""

    job_id: str
    state: JobState
    tries: int
    seq_try: int
    outputs: dict[str, Any]
    finish_order: int | None


class LoadedRequest(msgspec.Struct, kw_only=True):
    """Everything needed to resume a request."""

    record: RequestRecord
    #: the initial chain with every patch applied in order
    chain: Chain
    jobs: dict[str, JobRow]
    #: scope id -> tries used (1 = first run); scopes never restarted are absent
    scope_tries: dict[str, int]
    #: job ids in the order their COMPLETE was journaled (for replaying outputs)
    completed_order: list[str]
    #: (job_id, try, boot_id) of job_log rows still RUNNING
    running_tries: list[tuple[str, int, str]]
    #: (job_id, seq_try) -> how many of the job's tries in that run epoch failed
    failed: dict[tuple[str, int], int] = msgspec.field(default_factory=dict)


class RequestFilter(msgspec.Struct, kw_only=True):
    """Which requests `find_requests` returns; every field is optional."""

    type: str | None = None
    user: str | None = None
    states: list[RequestState] = msgspec.field(default_factory=list)
    #: arg name -> value as text (numbers in decimal, booleans as true/false)
    args: dict[str, str] = msgspec.field(default_factory=dict)
    #: created at or after
    since: float | None = None
    #: created before
    until: float | None = None
    limit: int = 100
    offset: int = 0


class WriterStats(msgspec.Struct, kw_only=True):
    """Counters of the group-commit writer, for metrics and health."""

    commits: int = 0
    items: int = 0
    failed_batches: int = 0
    last_batch: int = 0
    last_commit_ms: float = 0.0
    healthy: bool = True
    last_error: str = ""


class TryEnd(msgspec.Struct, frozen=True, kw_only=True):
    """How one try ended, as the journal records it (`Journal.tries_ended`)."""

    job_id: str
    try_no: int
    log_state: JobState
    job_state: JobState
    exit: int | None = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, Any] = {}
    #: (job id, try, seq_try) of jobs to start in the same transaction (`Journal.job_finished`)
    then_start: tuple[tuple[str, int, int], ...] = ()


_json_encoder = msgspec.json.Encoder()
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_chain_decoder = msgspec.json.Decoder(Chain)
_patch_decoder = msgspec.json.Decoder(ChainPatch)


def to_json(value: Any) -> str:
    return _json_encoder.encode(value).decode()


def dict_from_json(text: str | None) -> dict[str, Any]:
    return {} if text is None else _dict_decoder.decode(text)


def chain_from_json(text: str) -> Chain:
    return _chain_decoder.decode(text)


def patch_from_json(text: str) -> ChainPatch:
    return _patch_decoder.decode(text)


_numbered_patches_decoder = msgspec.json.Decoder(list[tuple[int, ChainPatch]])


def patches_from_json(text: str) -> list[ChainPatch]:
    """GET_DETAIL's array of [n, patch], in the order they were applied (n)."""
    return [patch for _, patch in sorted(_numbered_patches_decoder.decode(text), key=_first)]


def _first(pair: tuple[int, ChainPatch]) -> int:
    return pair[0]


def request_params(
    rec: RequestRecord, idempotency_key: str | None, body_hash: str | None
) -> dict[str, Any]:
    return {
        "id": rec.id,
        "type": rec.type,
        "user": rec.user,
        "args": to_json(rec.args),
        "state": rec.state.value,
        "created_at": rec.created_at,
        "started_at": rec.started_at,
        "finished_at": rec.finished_at,
        "trace_id": rec.trace_id,
        "reason": rec.reason,
        "idempotency_key": idempotency_key,
        "body_hash": body_hash,
    }


def request_from_row(row: sqlite3.Row) -> RequestRecord:
    return RequestRecord(
        id=row["id"],
        type=row["type"],
        user=row["user"],
        args=dict_from_json(row["args"]),
        state=RequestState(row["state"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        trace_id=row["trace_id"],
        reason=row["reason"],
    )


def view_from_row(row: sqlite3.Row) -> RequestView:
    """A row of GET_VIEW / FIND_REQUESTS (request columns and totals)."""
    return RequestView(
        id=row["id"],
        type=row["type"],
        state=RequestState(row["state"]),
        user=row["user"],
        args=dict_from_json(row["args"]),
        created_at=_dt(row["created_at"]),
        started_at=ts_to_dt(row["started_at"]),
        finished_at=ts_to_dt(row["finished_at"]),
        total_jobs=row["total_jobs"],
        finished_jobs=row["finished_jobs"],
        trace_id=row["trace_id"],
        reason=row["reason"],
    )


_job_rows_decoder = msgspec.json.Decoder(list[JobRow])


def jobs_from_json(text: str) -> dict[str, JobRow]:
    """GET_JOBS's one JSON array -> job id -> JobRow."""
    return {j.job_id: j for j in _job_rows_decoder.decode(text)}


def log_from_row(row: sqlite3.Row) -> JobLogRow:
    return JobLogRow(
        request_id=row["request_id"],
        job_id=row["job_id"],
        name=row["name"],
        type=row["type"],
        try_=row["try"],
        state=JobState(row["state"]),
        exit=row["exit"],
        error=row["error"],
        stdout=row["stdout"],
        stderr=row["stderr"],
        started_at=ts_to_dt(row["started_at"]),
        finished_at=ts_to_dt(row["finished_at"]),
        sequence_try=row["seq_try"],
        boot_id=row["boot_id"],
    )


def event_params(
    request_id: str,
    kind: str,
    state: str,
    at: float,
    job_id: str | None = None,
    try_: int | None = None,
    detail: str = "",
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "kind": kind,
        "state": state,
        "at": at,
        "job_id": job_id,
        "try": try_,
        "detail": detail,
    }


def new_event(
    seq: int,
    request_id: str,
    kind: str,
    state: str,
    at: datetime,
    job_id: str | None,
    try_: int | None,
    detail: str,
) -> Event:
    """An event as the journal numbered it (for writes that append several at once)."""
    return Event(
        seq=seq,
        request_id=request_id,
        kind=kind,
        state=state,
        at=at,
        job_id=job_id,
        try_=try_,
        detail=detail,
    )


def event_from_params(seq: int, params: dict[str, Any]) -> Event:
    return Event(
        seq=seq,
        request_id=params["request_id"],
        kind=params["kind"],
        state=params["state"],
        at=_dt(params["at"]),
        job_id=params["job_id"],
        try_=params["try"],
        detail=params["detail"],
    )


def event_from_row(row: sqlite3.Row) -> Event:
    return Event(
        seq=row["seq"],
        request_id=row["request_id"],
        kind=row["kind"],
        state=row["state"],
        at=_dt(row["at"]),
        job_id=row["job_id"],
        try_=row["try"],
        detail=row["detail"],
    )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
