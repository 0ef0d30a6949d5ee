"""What a try's end does in a running chain: decided (complete, retry, failed for good, stopped,
interrupted), journaled, then applied in the traverser's loop.

Write-ahead: a job's successors are released only after its COMPLETE row is committed; the
successors claimed with it start only once their RUNNING rows, written in the same transaction,
are committed. Part of the traverser (composition): runs in its loop, changes its state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from loguru import logger as _logger

from daemon import policy
from daemon.inbox import Timer, TryEnded
from daemon.journal.rows import TryEnd
from daemon.model import JobState

if TYPE_CHECKING:
    from daemon.traverser import Traverser

#: a chain's log lines keep one logger name, whichever module of its traverser writes them
logger = _logger.bind(_logger="daemon.traverser")


class TryEnds:
    def __init__(self, trav: Traverser) -> None:
        self.t = trav

    def on_try_end(self, msg: TryEnded) -> None:
        t = self.t
        jid = msg.job_id
        t.running.pop(jid, None)
        contended = t.env.slots.release(by=t)
        job = t.chain.jobs[jid]
        res = msg.result
        if msg.reason in ("suspend", "shutdown", "reset", "timeout-request"):
            log_state = JobState.STOPPED if msg.reason == "reset" else JobState.INTERRUPTED
            self._finish_write(msg, log_state, JobState.PENDING, self._to_pending)
            return
        if msg.reason == "stop":
            self._finish_write(msg, JobState.STOPPED, JobState.STOPPED, self._to_stopped)
            return
        if res.state == JobState.COMPLETE:
            # other chains wait for a slot: they get the one just freed, not our successor
            starts = [] if contended else t.claim_successors(jid)
            self._finish_write(
                msg, JobState.COMPLETE, JobState.COMPLETE, self._to_complete, starts=starts
            )
            return
        t.budget[jid] = t.budget.get(jid, 0) + 1
        decision = policy.job_retry(job, t.budget[jid], res.exit)
        if decision.retry:
            wait = decision.wait if t.mode == "run" else None
            self._finish_write(
                msg, JobState.FAIL, JobState.PENDING, lambda j: self._to_retry(j, wait)
            )
            return
        self._finish_write(msg, JobState.FAIL, JobState.FAIL, self.to_failed)

    def _finish_write(
        self,
        msg: TryEnded,
        log_state: JobState,
        job_state: JobState,
        then: Callable[[str], None],
        *,
        starts: list[tuple[str, int]] | None = None,
    ) -> None:
        """Journal a try's end (with the RUNNING rows of `starts`, claimed successors), then
        apply `then` and start the successors."""
        t = self.t
        jid = msg.job_id
        res = msg.result
        claimed = list(starts or ())
        t.busy.add(jid)
        error = res.error
        if log_state == JobState.INTERRUPTED:
            error = error or f"interrupted by {msg.reason}"
        end = TryEnd(
            job_id=jid,
            try_no=msg.try_no,
            log_state=log_state,
            job_state=job_state,
            exit=res.exit,
            error=error,
            stdout=res.stdout,
            stderr=res.stderr,
            outputs=res.outputs if log_state == JobState.COMPLETE else {},
            then_start=tuple((s, n, t.epoch.get(s, 1)) for s, n in claimed),
        )

        def done() -> None:
            t.busy.discard(jid)
            if log_state == JobState.COMPLETE:
                t.values.apply_outputs(t.chain.jobs[jid], res.outputs)
            then(jid)
            for s, try_no in claimed:
                job = t.chain.jobs[s]
                args = t.values.job_args(job)  # after the outputs it may read
                t.launcher.run(job, try_no, args, journaled=True)

        def refused() -> None:
            for s, _ in claimed:
                t.unclaim(s)  # `then` makes them ready again: they start the usual way
            claimed.clear()

        t.writer.queue_end(end, done, refused if claimed else None)

    # ---- what a journaled end does

    def _to_complete(self, jid: str) -> None:
        t = self.t
        t.state[jid] = JobState.COMPLETE
        t.mark_done(jid)
        t.resets.check()

    def _to_pending(self, jid: str) -> None:
        t = self.t
        t.state[jid] = JobState.PENDING
        if t.pending_preds[jid] == 0:
            t.make_ready(jid)
        t.resets.check()

    def _to_stopped(self, jid: str) -> None:
        self.t.state[jid] = JobState.STOPPED
        self.t.resets.check()

    def _to_retry(self, jid: str, wait: float | None) -> None:
        t = self.t
        t.state[jid] = JobState.PENDING
        if wait is None:  # shutting down: the next try happens after resume
            return
        if wait <= 0:
            t.make_ready(jid)
        else:
            loop = asyncio.get_running_loop()
            t.timers[jid] = loop.call_later(wait, t.post, Timer(lambda: self._retry_due(jid)))
        t.resets.check()

    def _retry_due(self, jid: str) -> None:
        t = self.t
        t.timers.pop(jid, None)
        if t.state[jid] == JobState.PENDING and t.pending_preds[jid] == 0:
            t.ready.add(jid)

    def to_failed(self, jid: str) -> None:
        t = self.t
        t.state[jid] = JobState.FAIL
        job = t.chain.jobs[jid]
        # a stop ends the chain; a suspend or shutdown only pauses it, so the sequence retry is
        # journaled now (its jobs back to PENDING) and runs when the chain is resumed
        scope = None
        if t.mode != "stop":
            scope = policy.sequence_retry(t.chain, job, t.scope_tries)
        if scope is None:
            t.failed = True
            logger.warning("job {} ({}) failed for good", job.name, jid, action="job_failed")
            t.resets.check()
            return
        logger.info("sequence retry of scope {} after {} failed", scope, jid, action="seq_retry")
        t.resets.begin(scope)
