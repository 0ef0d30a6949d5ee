"""The `noop` job type: completes at once (takes no `with:` keys)."""

from __future__ import annotations

from daemon.jobs.base import Job, JobContext, JobResult
from daemon.model import JobState


class NoopJob(Job):
    type_name = "noop"

    async def run(self, ctx: JobContext) -> JobResult:
        return JobResult(state=JobState.COMPLETE)

    def status(self) -> str:
        return "noop"
