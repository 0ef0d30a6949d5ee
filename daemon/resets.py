"""Sequence retries of a running chain: a copy of a sequence whose job failed for good starts
over from its first node, once nothing inside it runs or writes any more.

While a copy is being reset (and during its `retryWait`) none of its jobs starts; its running
jobs are stopped first. The reset is journaled (the jobs back to PENDING, a new epoch) before
any of it is applied. Part of the traverser (composition): runs in its loop, changes its state.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from daemon.chain import JobKind
from daemon.inbox import Timer
from daemon.model import JobState

if TYPE_CHECKING:
    from daemon.traverser import Traverser


class Resets:
    def __init__(self, trav: Traverser) -> None:
        self.t = trav
        self.blocked_scopes: set[str] = set()  # nothing inside them may start
        self.resetting: set[str] = set()  # to reset once nothing inside runs or writes
        self._inside: dict[str, list[str]] = {}  # scope -> its jobs (cleared on expansion)

    def blocked(self, scope_id: str) -> bool:
        """Is the scope, or one it sits in, being reset?"""
        if not self.blocked_scopes:
            return False
        sid: str | None = scope_id
        while sid is not None:
            if sid in self.blocked_scopes:
                return True
            sid = self.t.chain.scopes[sid].parent
        return False

    def begin(self, scope: str) -> None:
        """Start over a sequence copy: block it, stop what runs inside, reset it when idle."""
        t = self.t
        self.blocked_scopes.add(scope)
        self.resetting.add(scope)
        inside = set(self._scope_jobs(scope))
        for other, runner in t.running.items():
            if other in inside and runner is not None:
                t.spawn(runner.stop("reset"), f"stop:{t.rid}:{other}")
        self.check()

    def check(self) -> None:
        """Reset the copies waiting for it whose jobs no longer run or write."""
        t = self.t
        for scope in list(self.resetting):
            inside = self._scope_jobs(scope)
            if any(j in t.running or j in t.busy for j in inside):
                continue
            self.resetting.discard(scope)
            self._reset_scope(scope, inside)

    def forget_jobs(self) -> None:
        """An expansion changed which jobs the scopes hold."""
        self._inside.clear()

    def _scope_jobs(self, scope: str) -> list[str]:
        inside = self._inside.get(scope)
        if inside is None:
            inside = self._inside[scope] = self.t.chain.scope_jobs(scope)
        return inside

    def _reset_scope(self, scope: str, inside: list[str]) -> None:
        t = self.t
        jobs = [
            j for j in inside if not (t.chain.jobs[j].kind == JobKind.DEFERRED and t.is_done(j))
        ]
        scope_try = t.scope_tries.get(scope, 1) + 1
        wait = t.chain.scopes[scope].retry_wait
        for j in jobs:
            t.busy.add(j)
            h = t.timers.pop(j, None)
            if h is not None:
                h.cancel()
            t.ready.discard(j)

        async def write() -> list[Any]:
            return await t.env.journal.reset_jobs(
                t.rid, jobs, scope_id=scope, scope_try=scope_try, at=t.env.now()
            )

        def done() -> None:
            t.scope_tries[scope] = scope_try
            for j in jobs:
                t.busy.discard(j)
                was_done = t.is_done(j)
                t.state[j] = JobState.PENDING
                t.epoch[j] = t.epoch.get(j, 1) + 1
                t.budget[j] = 0
                if was_done:
                    t.windows.reopened(j)
            affected = set(jobs)
            for j in jobs:
                affected.update(t.edges.succs.get(j, ()))
            for j in affected:
                t.recount_preds(j)
            t.values.reset_scope(scope)

            def unblock() -> None:
                t.timers.pop(f"scope:{scope}", None)
                self.blocked_scopes.discard(scope)
                for j in jobs:
                    if t.pending_preds[j] == 0:
                        t.make_ready(j)

            if wait > 0 and t.mode == "run":
                loop = asyncio.get_running_loop()
                t.timers[f"scope:{scope}"] = loop.call_later(wait, t.post, Timer(unblock))
            else:
                unblock()

        t.writer.write(f"reset {scope}", write, done)
