"""Launching a chain's claimed tries: each try's RUNNING row is committed before its job object
is even made (write-ahead), then the job runs and its end comes back as a `TryEnded` message.

Part of the traverser (composition): a launch task stores its TryRunner in the traverser's
`running` so that a stop that arrives while the try starts can reach it (no await between the
check of the traverser's mode and that store).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from daemon.chain import ChainJob
from daemon.inbox import LaunchFailed, TryEnded
from daemon.jobs.base import JobResult
from daemon.journal.errors import IllegalTransition
from daemon.model import JobState
from daemon.runner import TryRunner, make_context

if TYPE_CHECKING:
    from daemon.traverser import Traverser


#: seconds of work a chain does in a row (handling messages, launching tries) before it
#: hands the event loop back: other chains and the API's calls get their turn within it
TIME_SLICE = 0.005


class Launcher:
    def __init__(self, trav: Traverser) -> None:
        self.t = trav

    def start(self, launches: list[tuple[ChainJob, int, dict[str, Any]]]) -> None:
        """Start claimed tries: one alone writes its own RUNNING row; several share one
        write (all commit or none), and each job runs once the write has committed."""
        t = self.t
        if len(launches) == 1:
            job, try_no, args = launches[0]
            self.run(job, try_no, args)
            return
        env = t.env
        starts = [(job.id, try_no, t.epoch.get(job.id, 1)) for job, try_no, _ in launches]

        async def go() -> None:
            try:
                events = await env.journal.jobs_started(t.rid, starts, at=env.now())
            except IllegalTransition:
                # the journal disagrees about one of them: let each write (or fail) alone
                for job, try_no, args in launches:
                    self.run(job, try_no, args)
                return
            except Exception as exc:
                for job, _, _ in launches:
                    t.post(LaunchFailed(job.id, exc))
                return
            env.publish(events)
            loop = asyncio.get_running_loop()
            until = loop.time() + TIME_SLICE
            for job, try_no, args in launches:
                self.run(job, try_no, args, journaled=True)  # runs at once if it need not wait
                if loop.time() > until:
                    await asyncio.sleep(0)  # let the rest of the loop in
                    until = loop.time() + TIME_SLICE

        t.spawn(go(), f"start:{t.rid}:{len(launches)}")

    def run(
        self, job: ChainJob, try_no: int, args: dict[str, Any], *, journaled: bool = False
    ) -> None:
        """Run one claimed try (its RUNNING row first, unless `journaled`): at once, in a task
        of its own from the moment it has to wait (a job that never waits needs none)."""
        self.t.spawn(
            self._try(job, try_no, args, journaled),
            f"job:{self.t.rid}:{job.id}:{try_no}",
            eager=True,
        )

    async def _try(self, job: ChainJob, try_no: int, args: dict[str, Any], journaled: bool) -> None:
        """One try: its RUNNING row (unless `journaled` already), then the job itself."""
        t = self.t
        env = t.env
        if not journaled:
            try:
                events = await env.journal.job_started(
                    t.rid, job.id, try_no, t.epoch.get(job.id, 1), env.now()
                )
            except Exception as exc:
                t.post(LaunchFailed(job.id, exc))
                return
            env.publish(events)
        ctx = make_context(
            t.rid,
            job.id,
            job.name,
            try_no,
            args,
            work_dir=env.settings.work_dir,
            output_limit=env.settings.output_limit,
            stop_grace=env.settings.job_stop_grace,
            tmp_dir=env.settings.tmp_dir,
            journal=env.settings.journal,
            boot_id=env.settings.boot_id,
        )
        try:
            obj = env.factory.make(job.type, name=job.name, with_=job.with_)
            if job.data:
                obj.deserialize(job.data)
        except Exception as exc:
            result = JobResult(state=JobState.FAIL, error=f"cannot make job {job.type!r}: {exc}")
            t.post(TryEnded(job.id, try_no, result, None))
            return
        runner = TryRunner(obj, ctx, timeout=job.timeout, type_name=job.type)
        if t.mode != "run":
            # stopped while the RUNNING row was being written: the job never ran
            reason = t.mode
            result = JobResult(state=JobState.STOPPED, error=f"not started: {reason}")
            t.post(TryEnded(job.id, try_no, result, reason))
            return
        t.running[job.id] = runner
        env.metrics_job_started(job.type)
        result = await runner.run()
        env.metrics_job_ended(job.type, result.state, time.monotonic() - runner.started_mono)
        t.post(TryEnded(job.id, try_no, result, runner.stop_reason))
