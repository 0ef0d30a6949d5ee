"""The windows of a chain's `each` groups: which copies run, which ready jobs wait for room.

An `each` node with `parallel: N` runs at most N of its copies at once. A copy counts against
its group from the first try of any of its jobs until all its jobs are done (and again if a
sequence retry makes its done jobs pending). A ready job whose copy may not start yet is
parked; when a running copy finishes, the copy that waited longest gets the room.

Pure bookkeeping: no event loop, no journal. The traverser says what happened to a job; jobs
that may start again go back into its ready queue.
"""

from __future__ import annotations

from collections.abc import Mapping

from daemon import policy
from daemon.chain import Chain
from daemon.inbox import DONE
from daemon.model import JobState
from daemon.ready import Parked, ReadyQueue


class EachWindows:
    def __init__(self, chain: Chain, ready: ReadyQueue) -> None:
        self.chain = chain
        self.ready = ready
        self.parked = Parked()  # ready, waiting for room in their `each` group
        #: job -> (group, copy) it sits in, for the groups with a `parallel` limit
        self.copies: dict[str, list[tuple[str, str]]] = {}
        self.copy_open: dict[str, int] = {}  # copy -> how many of its jobs are not done
        self.copy_started: set[str] = set()  # copies whose jobs have had a try
        self.group_active: dict[str, int] = {}  # group -> its started copies not done

    def add(self, jobs: list[str], state: Mapping[str, JobState], tries: Mapping[str, int]) -> None:
        """Count jobs new to the chain (all of them at start, an expansion's later): each job
        not done keeps its copies open; one that has run (or had a try) has started them."""
        by_scope: dict[str, list[tuple[str, str]]] = {}  # jobs of a scope share the answer
        for jid in jobs:
            sid = self.chain.jobs[jid].scope
            cps = by_scope.get(sid)
            if cps is None:
                # only groups with a `parallel` limit need counting: the others never park
                # a job, and a fan-out without a limit then costs no bookkeeping per job
                cps = by_scope[sid] = [
                    (gid, csid)
                    for gid, csid in policy.enclosing_copies(self.chain, sid)
                    if self.chain.groups[gid].parallel is not None
                ]
            self.copies[jid] = cps  # never changed in place
            if state.get(jid) in DONE:
                continue
            for gid, csid in cps:
                self.copy_open[csid] = self.copy_open.get(csid, 0) + 1
                self.group_active.setdefault(gid, 0)
                if state[jid] != JobState.PENDING or tries.get(jid, 0) > 0:
                    self._activate(gid, csid)

    def full(self, jid: str) -> tuple[str, str] | None:
        """(group, copy) of an `each` group that runs `parallel` other copies already."""
        for gid, csid in self.copies.get(jid, ()):
            limit = self.chain.groups[gid].parallel
            if (
                limit is not None
                and csid not in self.copy_started
                and self.group_active.get(gid, 0) >= limit
            ):
                return gid, csid
        return None

    def park(self, jid: str, where: tuple[str, str]) -> None:
        """A ready job of a copy that may not start yet (`where`: what `full` said)."""
        self.parked.park(where[0], where[1], jid)

    def started(self, jid: str) -> None:
        """A try of `jid` is claimed: its copies run, and count against their groups."""
        for gid, csid in self.copies.get(jid, ()):
            self._activate(gid, csid)

    def done(self, jid: str) -> None:
        """`jid` is done: a copy with no job left to do makes room in its group."""
        for gid, csid in self.copies.get(jid, ()):
            n = self.copy_open.get(csid, 0) - 1
            self.copy_open[csid] = n
            if n == 0 and csid in self.copy_started:
                self.group_active[gid] -= 1
                self._unpark(gid)

    def reopened(self, jid: str) -> None:
        """A done job is pending again (its sequence is retried): its copies are open again."""
        for gid, csid in self.copies.get(jid, ()):
            n = self.copy_open.get(csid, 0)
            self.copy_open[csid] = n + 1
            if n == 0 and csid in self.copy_started:
                self.group_active[gid] += 1

    def clear_parked(self) -> None:
        """Nothing starts any more (the chain is stopping)."""
        self.parked.clear()

    def _activate(self, gid: str, csid: str) -> None:
        if csid not in self.copy_started:
            self.copy_started.add(csid)
            self.group_active[gid] = self.group_active.get(gid, 0) + 1
            for j in self.parked.release_copy(gid, csid):
                self.ready.add(j)  # the copy runs: its other waiting jobs may start too

    def _unpark(self, gid: str) -> None:
        """A group has room again: the copies that waited longest may start."""
        limit = self.chain.groups[gid].parallel
        room = 1 if limit is None else limit - self.group_active.get(gid, 0)
        for _ in range(max(room, 0)):
            jobs = self.parked.release_next(gid)
            if not jobs:
                return
            for j in jobs:
                self.ready.add(j)
