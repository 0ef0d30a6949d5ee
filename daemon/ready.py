"""The traverser's queues of runnable jobs, with O(1) steps so that scheduling costs O(started).

`ReadyQueue` holds jobs whose predecessors are done, in the order they became ready: an ordered
set with O(1) add, discard, membership and pop-first (a deque with lazy deletion: a discarded
job's entry stays in the deque until it reaches the front and is skipped there; each entry
carries a ticket, so an entry left by an earlier membership is never taken for a later one).

`Parked` holds ready jobs that may not start because their `each` group already runs
`parallel` copies, keyed by group and copy, so that a copy finishing lets exactly the next
waiting copy through, instead of every waiting job being looked at again after every event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class ReadyQueue:
    def __init__(self) -> None:
        self._order: deque[tuple[str, int]] = deque()
        self._members: dict[str, int] = {}  # job -> the ticket of its live entry in _order
        self._ticket = 0

    def __contains__(self, jid: object) -> bool:
        return jid in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __bool__(self) -> bool:
        return bool(self._members)

    def __iter__(self) -> Iterator[str]:
        """Members in queue order (a snapshot: the queue may change while iterating)."""
        live = [jid for jid, t in self._order if self._members.get(jid) == t]
        return iter(live)

    def _enter(self, jid: str) -> tuple[str, int] | None:
        if jid in self._members:
            return None
        self._ticket += 1
        self._members[jid] = self._ticket
        return jid, self._ticket

    def add(self, jid: str) -> None:
        entry = self._enter(jid)
        if entry is not None:
            self._order.append(entry)

    def push_front(self, jid: str) -> None:
        """Put back a job just popped (it could not start yet): it stays first in line."""
        entry = self._enter(jid)
        if entry is not None:
            self._order.appendleft(entry)

    def discard(self, jid: str) -> None:
        self._members.pop(jid, None)
        if not self._members:
            self._order.clear()

    def clear(self) -> None:
        self._members.clear()
        self._order.clear()

    def pop(self) -> str | None:
        """The first job in line, removed; None when empty."""
        while self._order:
            jid, ticket = self._order.popleft()
            if self._members.get(jid) == ticket:
                del self._members[jid]
                return jid
        return None


class Parked:
    """Ready jobs waiting for room in their `each` group: group -> copy -> jobs, copies FIFO."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, list[str]]] = {}
        self._order: dict[str, deque[str]] = {}

    def __len__(self) -> int:
        return sum(len(jobs) for copies in self._jobs.values() for jobs in copies.values())

    def park(self, gid: str, csid: str, jid: str) -> None:
        copies = self._jobs.setdefault(gid, {})
        jobs = copies.get(csid)
        if jobs is None:
            copies[csid] = [jid]
            self._order.setdefault(gid, deque()).append(csid)
        elif jid not in jobs:
            jobs.append(jid)

    def release_copy(self, gid: str, csid: str) -> list[str]:
        """The jobs parked for one copy (that copy has started: its other jobs may start)."""
        copies = self._jobs.get(gid)
        if not copies:
            return []
        return copies.pop(csid, [])

    def release_next(self, gid: str) -> list[str]:
        """The jobs of the copy that has waited longest in a group that has room again."""
        copies = self._jobs.get(gid)
        order = self._order.get(gid)
        while copies and order:
            jobs = copies.pop(order.popleft(), None)
            if jobs is not None:
                return jobs
        if order is not None and not copies:
            order.clear()
        return []

    def clear(self) -> None:
        self._jobs.clear()
        self._order.clear()
