"""Deferred expansion in a running chain: a deferred node that may run is expanded (by
:func:`daemon.builder.expand`) into the jobs it stands for, and takes their place.

An expansion's jobs are committed with the expansion in one transaction before the chain
changes. An expansion that fails is a failed job like any other (its try is journaled as
failed). Part of the traverser (composition): runs in its loop, changes its state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger as _logger

from daemon.builder import expand
from daemon.chain import ChainPatch
from daemon.errors import BuildError
from daemon.inbox import Timer, Written
from daemon.model import JobState

if TYPE_CHECKING:
    from daemon.traverser import Traverser

#: a chain's log lines keep one logger name, whichever module of its traverser writes them
logger = _logger.bind(_logger="daemon.traverser")


class Expansions:
    def __init__(self, trav: Traverser) -> None:
        self.t = trav

    def start(self, jid: str) -> None:
        """Expand the deferred node `jid` (its predecessors are done)."""
        t = self.t
        t.busy.add(jid)  # until the patch is applied or the failure handled (in the loop)

        async def go() -> None:
            try:
                patch = await expand(t.chain, jid, t.values, t.env.factory, limits=t.env.limits)
            except Exception as exc:
                text = (
                    exc.message
                    if isinstance(exc, BuildError)
                    else f"expansion failed: {type(exc).__name__}: {exc}"
                )
                t.post(Written(lambda: self._expansion_failed(jid, text)))
                return
            t.post(Timer(lambda: self._journal_patch(jid, patch)))

        t.spawn(go(), f"expand:{t.rid}:{jid}")

    def _journal_patch(self, jid: str, patch: ChainPatch) -> None:
        t = self.t

        async def write() -> list[Any]:
            return await t.env.journal.apply_patch(t.rid, patch)

        t.writer.write(f"expand {jid}", write, lambda: self._apply_patch(jid, patch))

    def _apply_patch(self, jid: str, patch: ChainPatch) -> None:
        t = self.t
        t.busy.discard(jid)
        t.chain.apply(patch)
        t.values.apply_patch(patch)
        t.resets.forget_jobs()
        t.edges.patch(patch)
        new = [j.id for j in patch.jobs]
        for j in new:
            t.state[j] = JobState.PENDING
        for j in new:
            t.recount_preds(j)
        for s in t.edges.succs[jid]:
            if s not in new:
                t.recount_preds(s)
        t.windows.add(new, t.state, t.tries)
        t.state[jid] = JobState.COMPLETE
        t.mark_done(jid)
        logger.info("expanded {} into {} jobs", jid, len(new), action="expand")

    def _expansion_failed(self, jid: str, message: str) -> None:
        t = self.t
        t.busy.discard(jid)
        logger.error("expansion of {} failed: {}", jid, message, action="expand_failed")
        try_no = t.tries.get(jid, 0) + 1
        t.tries[jid] = try_no
        t.busy.add(jid)

        async def write() -> list[Any]:
            journal = t.env.journal
            ev = await journal.job_started(t.rid, jid, try_no, t.epoch.get(jid, 1), t.env.now())
            ev2 = await journal.job_finished(
                t.rid,
                jid,
                try_no,
                log_state=JobState.FAIL,
                job_state=JobState.FAIL,
                exit=None,
                error=message,
                stdout="",
                stderr="",
                outputs={},
                at=t.env.now(),
            )
            return [*ev, *ev2]

        def done() -> None:
            t.busy.discard(jid)
            # a failed job like any other: its sequence is retried if it has tries left (the
            # retry runs again the jobs that set what the node expands over)
            t.ends.to_failed(jid)

        t.writer.write(f"expand-fail {jid}", write, done)
