"""Runs one try of one job: timeout, stop, exceptions turned into failed tries, live status.

A runner never raises: whatever the job does, the try ends in a JobResult. The runner knows
nothing of the journal or the chain; the traverser journals before and after it.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any

from loguru import logger

from daemon import logctx
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.model import JobState

#: how long a stopped job may take to return before the runner gives up on it
STOP_WAIT = 30.0


class TryRunner:
    """One try: owns the job object while it runs. `stop()` may be called from anywhere."""

    def __init__(self, job: Job, ctx: JobContext, *, timeout: float | None, type_name: str):
        self.job = job
        self.ctx = ctx
        self.timeout = timeout
        self.type_name = type_name
        self.started_mono = time.monotonic()
        self.started_at = time.time()
        self.stop_reason: str | None = None
        self._task: asyncio.Task[JobResult] | None = None

    def status(self) -> str:
        try:
            text = self.job.status()
        except Exception as exc:  # a broken status() must not break the API
            text = f"(status failed: {exc})"
        return text or f"running for {time.monotonic() - self.started_mono:.1f}s"

    async def stop(self, reason: str) -> None:
        """Ask the job to stop; run() then ends STOPPED (or as the job reports)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        try:
            await self.job.stop()
        except Exception as exc:
            logger.warning("job stop() raised: {}", exc, action="job_stop_error")

    async def run(self) -> JobResult:
        ctx = self.ctx
        token = logctx.push(request_id=ctx.request_id, job_id=ctx.job_id, try_=ctx.try_no)
        try:
            # Every try is in the journal (`spind log`); the log adds a line per try only when
            # it did not complete, so that thousands of jobs a second do not flood journald
            # (which rate-limits) and do not cost a loguru record each (~40 us).
            logger.debug("job try started", action="job_start", type=self.type_name)
            result = await self._run()
            (logger.debug if result.state == JobState.COMPLETE else logger.info)(
                "job try ended: {} {}",
                result.state,
                result.error,
                action="job_end",
                exit=result.exit,
                type=self.type_name,
            )
            return result
        finally:
            logctx.pop(token)

    async def _run(self) -> JobResult:
        if self.timeout is None:
            return await self._guarded()  # no task of its own: nothing to wait for beside it
        self._task = asyncio.ensure_future(self._guarded())
        done, _ = await asyncio.wait({self._task}, timeout=self.timeout)
        if done:
            return self._task.result()
        await self.stop("timeout")
        done, _ = await asyncio.wait({self._task}, timeout=STOP_WAIT)
        if not done:
            self._task.cancel()
        res = self._task.result() if done else None
        return JobResult(
            state=JobState.FAIL,
            exit=res.exit if res else None,
            error=f"timed out after {self.timeout:g}s",
            stdout=res.stdout if res else "",
            stderr=res.stderr if res else "",
        )

    async def _guarded(self) -> JobResult:
        try:
            result = await self.job.run(self.ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            tb = traceback.format_exc()
            logger.error("job raised {}: {}", type(exc).__name__, exc, action="job_raised")
            return JobResult(state=JobState.FAIL, error=f"{type(exc).__name__}: {exc}", stderr=tb)
        if not isinstance(result, JobResult):
            return JobResult(
                state=JobState.FAIL, error=f"run() returned {type(result).__name__}, not JobResult"
            )
        return result


def make_context(
    request_id: str,
    job_id: str,
    name: str,
    try_no: int,
    args: dict[str, Any],
    *,
    work_dir: str | None,
    output_limit: int,
    stop_grace: float,
    tmp_dir: str | None = None,
    journal: str = "",
    boot_id: str = "",
) -> JobContext:
    return JobContext(
        request_id=request_id,
        job_id=job_id,
        name=name,
        try_no=try_no,
        try_key=f"{request_id}/{job_id}/{try_no}",
        args=args,
        work_dir=work_dir,
        output_limit=output_limit,
        stop_grace=stop_grace,
        tmp_dir=tmp_dir,
        journal=journal,
        boot_id=boot_id,
    )
