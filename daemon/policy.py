"""Retry and sequence-retry decisions. Pure: data in, decision out, no clock reads.

A job has `1 + retry` tries per run of its sequence copy; `retryWait` between them, multiplied by
`retryBackoff` after each failed try and capped at `retryMaxWait`; `retryOn`, when given, lists
the exit codes that may be retried (any other failure is final at once). When a job fails for
good, the innermost enclosing sequence copy with tries left restarts from its first node after its
own `retryWait`; the job's budget starts over with it.
"""

from __future__ import annotations

import msgspec

from daemon.chain import Chain, ChainJob


class RetryDecision(msgspec.Struct, frozen=True):
    retry: bool
    wait: float = 0.0
    reason: str = ""


def job_retry(job: ChainJob, failed_tries: int, exit_code: int | None) -> RetryDecision:
    """After `failed_tries` failed tries in this run of its copy, may the job try again?"""
    if failed_tries > job.retry:
        return RetryDecision(False, reason=f"no tries left ({job.retry + 1} used)")
    if job.retry_on is not None and exit_code not in job.retry_on:
        return RetryDecision(False, reason=f"exit {exit_code} is not in retryOn")
    return RetryDecision(True, wait=retry_wait(job, failed_tries))


def retry_wait(job: ChainJob, failed_tries: int) -> float:
    """Wait before the next try: retryWait * retryBackoff^(failed_tries - 1), capped."""
    wait = job.retry_wait * (job.retry_backoff ** max(failed_tries - 1, 0))
    if job.retry_max_wait is not None:
        wait = min(wait, job.retry_max_wait)
    return max(wait, 0.0)


def sequence_retry(chain: Chain, job: ChainJob, scope_tries: dict[str, int]) -> str | None:
    """The scope (sequence copy) to restart after `job` failed for good, or None.

    The innermost enclosing copy whose `retry` is not used up; `scope_tries` counts runs of each
    copy (1 = the first run, absent = 1).
    """
    sid: str | None = job.scope
    hops = 0
    while sid is not None and hops < 10_000:
        hops += 1
        scope = chain.scopes[sid]
        if scope.retry > 0 and scope_tries.get(sid, 1) <= scope.retry:
            return sid
        sid = scope.parent
    return None


def enclosing_copies(chain: Chain, scope_id: str) -> list[tuple[str, str]]:
    """(group id, copy scope id) of every `each` copy a scope sits in, innermost first."""
    out: list[tuple[str, str]] = []
    sid: str | None = scope_id
    hops = 0
    while sid is not None and hops < 10_000:
        hops += 1
        scope = chain.scopes[sid]
        if scope.group is not None:
            out.append((scope.group, sid))
        sid = scope.parent
    return out
