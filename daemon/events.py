"""Live events: the journal's event rows, fanned out to whoever follows a request.

Events are published only after the transaction that wrote them committed, in commit order.
A follower first subscribes, then reads the backlog from the journal, then takes live events,
skipping what the backlog already gave; a follower that falls too far behind is dropped back
to reading the journal, so a slow client never holds memory of the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from daemon.model import Event, RequestState

#: events a follower may lag behind before it is sent back to the journal
QUEUE_LIMIT = 10_000
#: events read from the journal at once by a follower (the journal's default page)
BACKLOG_PAGE = 1000

#: a follower's journal read: (events after a seq, finished?) in one snapshot, None if none
Backlog = Callable[[str, int], Awaitable[tuple[list[Event], bool] | None]]

_FINAL = {str(s) for s in RequestState if s.finished}


def is_end(ev: Event) -> bool:
    return ev.kind == "request" and ev.state in _FINAL


class EventBus:
    def __init__(self) -> None:
        self._subs: dict[str, set[asyncio.Queue[Event | None]]] = {}

    def publish(self, events: Iterable[Event]) -> None:
        for ev in events:
            for q in list(self._subs.get(ev.request_id, ())):
                try:
                    q.put_nowait(ev)
                except asyncio.QueueFull:
                    # too slow: drop its queue; it will read the journal again
                    self._subs[ev.request_id].discard(q)
                    while not q.empty():
                        q.get_nowait()
                    q.put_nowait(None)

    def subscribe(self, request_id: str) -> asyncio.Queue[Event | None]:
        q: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._subs.setdefault(request_id, set()).add(q)
        return q

    def unsubscribe(self, request_id: str, q: asyncio.Queue[Event | None]) -> None:
        subs = self._subs.get(request_id)
        if subs is not None:
            subs.discard(q)
            if not subs:
                del self._subs[request_id]

    async def follow(
        self, request_id: str, after_seq: int, backlog: Backlog
    ) -> AsyncIterator[Event]:
        """Backlog then live events of one request; ends after its final state.

        `backlog(request_id, after)` reads, in one snapshot, a page of the journal's events
        after `after` (at most BACKLOG_PAGE) and whether the request is finished (None: no such
        request, or pruned). A request that ended and was retried or skipped past has several
        final-state events: the whole backlog is read, and the stream ends only when the
        request was finished as of the snapshot of the last page read (then that page holds
        its final event, and nothing more will come).
        """
        last = after_seq
        while True:
            q = self.subscribe(request_id)
            try:
                while True:
                    got = await backlog(request_id, last)
                    if got is None:
                        return
                    page, finished = got
                    for ev in page:  # an old end (retried since) does not end the backlog
                        last = ev.seq
                        yield ev
                    if len(page) < BACKLOG_PAGE:
                        break
                if finished:
                    return
                while True:
                    item = await q.get()
                    if item is None:
                        break  # dropped for lagging: read the journal again
                    if item.seq <= last:
                        continue
                    last = item.seq
                    yield item
                    if is_end(item):
                        return
            finally:
                self.unsubscribe(request_id, q)
