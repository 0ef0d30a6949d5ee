"""A chain's journal writes: each applied in the traverser's loop only once it has committed.

Write-ahead: what the journal does not hold must not happen, so a change is journaled first and
applied after (as a `Written` message in the traverser's loop). A failed write is retried until
it commits; a write the journal refuses is not. Try ends, the most frequent writes, are queued
and written together after each batch of messages, and before any other write so that writes
reach the journal in the order they were made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from loguru import logger as _logger

from daemon.inbox import Message, WriteFailed, Written
from daemon.journal.errors import IllegalTransition
from daemon.journal.rows import TryEnd
from daemon.model import Event
from daemon.runtime_env import RuntimeEnv

#: a chain's log lines keep one logger name, whichever module of its traverser writes them
logger = _logger.bind(_logger="daemon.traverser")


@dataclass(slots=True)
class _End:
    """A try end waiting for `flush_ends`: its row, what to do once committed, and what
    to undo first if the journal refuses it."""

    end: TryEnd
    done: Callable[[], None]
    refused: Callable[[], None] | None


class ChainWriter:
    """The journal writes of one chain; reports back through its traverser's inbox (`post`),
    runs its slow paths as the traverser's tasks (`spawn`)."""

    def __init__(
        self,
        env: RuntimeEnv,
        request_id: str,
        post: Callable[[Message], None],
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self.env = env
        self.rid = request_id
        self.post = post
        self.spawn = spawn
        self.inflight = 0  # writes submitted, not yet applied in the loop
        self._ends: list[_End] = []  # try ends to journal after this batch of messages

    def queue_end(
        self, end: TryEnd, done: Callable[[], None], refused: Callable[[], None] | None
    ) -> None:
        """A try end to journal with the others of this batch of messages (`flush_ends`)."""
        self._ends.append(_End(end, done, refused))

    def flush_ends(self) -> None:
        """Journal the try ends queued by `queue_end`: one alone as its own write, several in
        one write (all commit or none). Called after each batch of messages, and before any
        other write so that writes reach the journal in the order they were made."""
        ends, self._ends = self._ends, []
        if not ends:
            return
        if len(ends) == 1:
            e = ends[0]
            self._submit(f"finish {e.end.job_id}", self._ends_write([e.end]), e.done, e.refused)
            return

        def alone() -> None:
            # the journal refused the shared write: write each end alone, so that only the
            # one it disagrees with is refused
            for e in ends:
                self._submit(f"finish {e.end.job_id}", self._ends_write([e.end]), e.done, e.refused)

        def done() -> None:
            for e in ends:
                e.done()

        what = f"finish {len(ends)} tries"
        self._submit(what, self._ends_write([e.end for e in ends]), done, split=alone)

    def _ends_write(self, ends: list[TryEnd]) -> Callable[[], Awaitable[list[Event]]]:
        return lambda: self.env.journal.queue_tries_ended(self.rid, ends, at=self.env.now())

    def write(
        self,
        what: str,
        write: Callable[[], Any],
        then: Callable[[], None],
        refused: Callable[[], None] | None = None,
    ) -> None:
        """Journal, then apply `then` in the loop. A failed write is retried until it commits
        (the chain stalls and the daemon reports itself unhealthy meanwhile): what the journal
        does not hold must not happen. A write the journal refuses (IllegalTransition) is not
        retried: `refused` (if given), then `then`, are applied as if it had committed."""
        self.flush_ends()  # queued try ends first: writes reach the journal in order
        self._submit(what, write, then, refused)

    def _submit(
        self,
        what: str,
        write: Callable[[], Any],
        then: Callable[[], None],
        refused: Callable[[], None] | None = None,
        *,
        split: Callable[[], None] | None = None,
    ) -> None:
        """`write` without the flush. `split`: a write of several parts that the journal
        refuses is not applied at all; `split` (in the loop) writes its parts one by one."""
        self.inflight += 1
        was_refused = False

        def applied() -> None:
            self.inflight -= 1
            if was_refused and split is not None:
                split()
                return
            if was_refused and refused is not None:
                refused()
            then()

        async def go(first: Awaitable[Any] | None) -> None:
            nonlocal was_refused
            delay = 0.2
            while True:
                try:
                    if first is not None:
                        aw, first = first, None
                    else:
                        aw = write()
                    events = await aw
                    break
                except IllegalTransition as exc:
                    # the journal disagrees with us: a bug, not a fault that clears; keep going
                    if split is None:
                        logger.error("journal refused {}: {}", what, exc, action="journal_cas")
                    events = []
                    was_refused = True
                    break
                except Exception as exc:
                    self.post(WriteFailed(what, exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self.env.publish(events)
            self.post(Written(applied))

        try:
            first = write()
        except Exception as exc:  # refused before it was queued (say, the journal is closed)
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            first = failed
        if not isinstance(first, asyncio.Future):
            self.spawn(go(first), f"write:{self.rid}:{what}")
            return

        def committed(fut: asyncio.Future[Any]) -> None:
            # the common case needs no task: the write committed, tell the traverser
            if fut.cancelled() or fut.exception() is not None:
                self.spawn(go(fut), f"write:{self.rid}:{what}")  # refusal, fault: the slow path
                return
            self.env.publish(fut.result())
            self.post(Written(applied))

        first.add_done_callback(committed)
