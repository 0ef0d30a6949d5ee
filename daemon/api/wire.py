"""Bodies the API reads and writes, beyond the shared views in :mod:`daemon.model`.

Request bodies forbid unknown fields so that a typo is a 400 naming the field, not a silently
ignored option. Field names are camelCase on the wire, as in :mod:`daemon.model`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from daemon.chain import Chain, JobKind
from daemon.model import HealthView

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
JobId = Annotated[str, msgspec.Meta(pattern=r"^j[0-9]{1,9}$")]
#: some text that is not only white space
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"\S")]


class _Body(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    pass


class _Out(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class CreateBody(_Body):
    """`POST /api/v1/requests`: the request type and its args."""

    type: NonEmpty
    args: dict[str, Any] = msgspec.field(default_factory=dict)


class RetryBody(_Body):
    """`PUT .../retry`: the jobs to retry (all failed or stopped ones when absent)."""

    jobs: list[JobId] | None = None


class SkipBody(_Body):
    """`PUT .../jobs/{jobId}/skip`: why the job is skipped (required)."""

    reason: Reason


class ErrorBody(_Out):
    """Every error response."""

    error: str
    details: Any = None


class VersionView(_Out):
    version: str
    api: str = "v1"


class ProbeHealthView(_Out, omit_defaults=True, forbid_unknown_fields=True):
    """`GET /api/v1/health` for a caller without a token (auth enabled): no paths, no error
    texts, no counts; `reason` is set when not ok. The full view needs an identity."""

    ok: bool
    reason: str | None = None


def probe_health(view: HealthView) -> ProbeHealthView:
    """The coarse view of `view`: ok, or the first reason it is not."""
    if view.ok:
        return ProbeHealthView(ok=True)
    if view.shutting_down:
        reason = "shutting down"
    elif not view.journal_writable:
        reason = "journal not writable"
    else:
        reason = "event loop lagging"
    return ProbeHealthView(ok=False, reason=reason)


class PlanJob(_Out):
    """One job of a dry run: what would run, with which args, in which sequence copy."""

    id: str
    name: str
    type: str
    args: dict[str, Any]
    retry: int
    retry_wait: float
    scope: str
    sequence: str
    deferred: bool
    timeout: float | None = None


class PlanView(_Out):
    """`POST /api/v1/requests?dryRun=true`: the chain the request would build."""

    type: str
    args: dict[str, Any]
    jobs: list[PlanJob]
    edges: list[tuple[str, str]]


def plan_view(chain: Chain) -> PlanView:
    jobs = []
    for job in chain.jobs.values():
        scope = chain.scopes.get(job.scope)
        jobs.append(
            PlanJob(
                id=job.id,
                name=job.name,
                type=job.type,
                args=dict(job.args),
                retry=job.retry,
                retry_wait=job.retry_wait,
                scope=job.scope,
                sequence=scope.sequence if scope is not None else "",
                deferred=job.kind == JobKind.DEFERRED,
                timeout=job.timeout,
            )
        )
    return PlanView(
        type=chain.request_type, args=dict(chain.args), jobs=jobs, edges=list(chain.edges)
    )
