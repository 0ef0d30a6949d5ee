"""Small builders shared by the journal tests: chains, request records, a journal on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from daemon.chain import Chain, ChainJob, ChainPatch, JobKind, Scope
from daemon.journal import Journal, RequestRecord
from daemon.model import JobState, RequestState

T0 = 1_000_000.0  # a fixed "now" for records; the journal never reads the clock for them


def make_chain(
    n_jobs: int = 3, *, deferred: tuple[str, ...] = (), request_type: str = "deploy"
) -> Chain:
    """A line j1 -> j2 -> ... in scope s1; ids in `deferred` are deferred nodes."""
    jobs = {}
    for i in range(1, n_jobs + 1):
        jid = f"j{i}"
        kind = JobKind.DEFERRED if jid in deferred else JobKind.JOB
        jobs[jid] = ChainJob(
            id=jid, name=f"node{i}", type="noop", scope="s1", kind=kind, args={"n": i}
        )
    edges = [(f"j{i}", f"j{i + 1}") for i in range(1, n_jobs)]
    return Chain(
        request_type=request_type,
        args={"env": "prod"},
        jobs=jobs,
        edges=edges,
        scopes={"s1": Scope(id="s1", sequence=request_type)},
        next_id=n_jobs + 1,
    )


def make_patch(deferred: str, new_ids: list[str], *, after: str | None = None) -> ChainPatch:
    """An expansion of `deferred` into `new_ids`, in a new scope s9 under s1."""
    jobs = [ChainJob(id=j, name=f"each-{j}", type="noop", scope="s9") for j in new_ids]
    edges = [(deferred, j) for j in new_ids]
    if after is not None:
        edges += [(j, after) for j in new_ids]
    return ChainPatch(
        deferred=deferred,
        jobs=jobs,
        edges=edges,
        scopes=[Scope(id="s9", sequence="each", parent="s1")],
        next_id=100,
    )


def make_record(
    rid: str,
    *,
    type: str = "deploy",
    user: str = "alice",
    args: dict[str, Any] | None = None,
    created_at: float = T0,
    state: RequestState = RequestState.PENDING,
) -> RequestRecord:
    return RequestRecord(
        id=rid,
        type=type,
        user=user,
        args={"env": "prod"} if args is None else args,
        state=state,
        created_at=created_at,
        trace_id=f"trace-{rid}",
    )


async def open_journal(path: Path, **kwargs: Any) -> Journal:
    journal = await Journal.open(path, **kwargs)
    await journal.start_boot(os.getpid(), "test", at=T0)
    return journal


async def run_job(
    journal: Journal,
    rid: str,
    job_id: str,
    *,
    try_no: int = 1,
    state: JobState = JobState.COMPLETE,
    outputs: dict[str, Any] | None = None,
    at: float = T0,
) -> None:
    """Start a try and finish it with `state` (the job is left in the same state)."""
    await journal.job_started(rid, job_id, try_no, 1, at)
    await journal.job_finished(
        rid,
        job_id,
        try_no,
        log_state=state,
        job_state=state,
        exit=0 if state == JobState.COMPLETE else 1,
        error="" if state == JobState.COMPLETE else "failed",
        stdout=f"out {job_id}",
        stderr="",
        outputs=outputs or {},
        at=at + 1,
    )
