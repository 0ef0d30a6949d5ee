"""A job type that blocks the daemon's event loop on purpose (for the watchdog test)."""

from __future__ import annotations

import time
from typing import ClassVar

from daemon.jobs.base import Job, JobContext, JobResult
from daemon.model import JobState


class BlockLoop(Job):
    type_name: ClassVar[str] = "block-loop"
    params: ClassVar[frozenset[str]] = frozenset({"seconds"})

    async def run(self, ctx: JobContext) -> JobResult:
        time.sleep(float(self.with_.get("seconds", "2")))  # blocks the loop: the point
        return JobResult(state=JobState.COMPLETE)
