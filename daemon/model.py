"""States and the wire/journal records shared by the journal, the runtime and the API.

Field names on the wire follow Spin Cycle's API (camelCase); Python attributes are snake_case
and renamed by msgspec. Times are RFC 3339 UTC strings on the wire (``datetime`` with tz) and
float epoch seconds in the journal.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import msgspec


class RequestState(enum.StrEnum):
    """States of a request (and of its chain), as Spin Cycle names them.

    PENDING: journaled, not started yet. RUNNING: its traverser is running it.
    SUSPENDED: stopped by shutdown, a suspend call or a held job; resumes later.
    COMPLETE: every job completed. FAIL: a job failed for good. STOPPED: stopped by a user.
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    STOPPED = "STOPPED"

    @property
    def finished(self) -> bool:
        return self in (RequestState.COMPLETE, RequestState.FAIL, RequestState.STOPPED)


class JobState(enum.StrEnum):
    """States of a job. A job log row (one try) also uses INTERRUPTED: the daemon went away."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    STOPPED = "STOPPED"
    SKIPPED = "SKIPPED"
    INTERRUPTED = "INTERRUPTED"

    @property
    def done(self) -> bool:
        """The job will not run again unless someone retries the request."""
        return self in (JobState.COMPLETE, JobState.SKIPPED)


def now_utc() -> datetime:
    return datetime.now(UTC)


def ts_to_dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class _Wire(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class JobView(_Wire):
    id: str
    name: str
    type: str
    state: JobState
    tries: int = 0
    sequence_id: str = ""
    kind: str = "job"
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    status: str = ""


class RequestView(_Wire):
    """A request as the API returns it (Spin Cycle's fields first)."""

    id: str
    type: str
    state: RequestState
    user: str
    args: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    total_jobs: int = 0
    finished_jobs: int = 0
    trace_id: str = ""
    reason: str = ""


class RequestDetail(RequestView):
    jobs: list[JobView] = msgspec.field(default_factory=list)
    edges: list[tuple[str, str]] = msgspec.field(default_factory=list)


class JobLogRow(_Wire):
    """One try of one job."""

    request_id: str
    job_id: str
    name: str
    type: str
    try_: int = msgspec.field(name="try")
    state: JobState
    exit: int | None = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    sequence_try: int = 1
    boot_id: str = ""


class Event(_Wire):
    """One state change, in journal order (`seq` is increasing per daemon journal)."""

    seq: int
    request_id: str
    kind: str  # "request" | "job"
    state: str
    at: datetime
    job_id: str | None = None
    try_: int | None = msgspec.field(default=None, name="try")
    detail: str = ""


class RunningJob(_Wire):
    """A job running now, for `GET /api/v1/status/running`."""

    request_id: str
    job_id: str
    name: str
    type: str
    try_: int = msgspec.field(name="try")
    started_at: datetime
    status: str = ""
    request_type: str = ""
    user: str = ""


class ArgView(_Wire):
    name: str
    kind: str  # "required" | "optional" | "static"
    desc: str = ""
    default: str | None = None


class RequestTypeView(_Wire):
    """A request type users may start (`GET /api/v1/request-list`)."""

    name: str
    desc: str = ""
    args: list[ArgView] = msgspec.field(default_factory=list)
    file: str = ""


class HealthView(_Wire):
    ok: bool
    journal_writable: bool
    loop_lag_ms: float
    shutting_down: bool = False
    specs_ok: bool = True
    specs_errors: list[str] = msgspec.field(default_factory=list)
    #: spec loads finished since start (1 = the first); a reload adds one, errors or not
    specs_loads: int = 0
    #: false while the config file read by the last reload was invalid (the old one stays)
    config_ok: bool = True
    #: why, naming the file (or environment variable) and the key
    config_errors: list[str] = msgspec.field(default_factory=list)
    running_requests: int = 0
    running_jobs: int = 0
    last_journal_error: str = ""
