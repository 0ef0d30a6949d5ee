"""Small reads on the event loop's own thread, under a step budget.

A read handed to the reader thread (aiosqlite) pays for the hop twice: the thread has to get
the GIL back from the event loop before it runs and after each SQLite step, and the loop then
has to pick the answer up. While the loop is busy (a fan-out of thousands of jobs a second)
each of those waits lasts until the loop gives up the GIL, and reads queue behind one another:
a 50 µs read of a 10-job request took 10-70 ms to answer. The loop already holds the GIL, so a
small read runs faster on the loop itself than anywhere else.

But a read on the loop blocks every chain and every other call for as long as it runs, and a
read's cost grows with its request (a 10,000-job request's detail is ~70 ms). So an inline
read runs under SQLite's progress handler: every `TICK` virtual-machine instructions it
counts, and past `BUDGET` instructions it interrupts the statement (a few milliseconds of
work at most). An interrupted read is not an error: the caller sends it to the reader thread,
as every read went before, and remembers its key (say, "detail of request R"), so that the
same large read goes straight to the thread next time. Requests only grow, so a key once too
big stays too big.

Any other SQLite error (a busy lock: this connection never waits for one; a fault of the
database) also sends the read to the thread, which retries with the journal's busy timeout
and reports faults as reads always did. Reads are pure functions of the connection: running
one again is safe.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from daemon.journal import queries as q

T = TypeVar("T")

#: SQLite virtual-machine instructions between two calls of the progress handler
TICK = 1000
#: instructions an inline read may run before it is interrupted (a 10-job request's detail
#: takes ~300; ~10,000 is 2-3 ms of work on our machine, see docs/performance.md)
BUDGET = 10_000
#: keys of reads that went over the budget, remembered (oldest forgotten first)
REMEMBER = 1024


class InlineReader:
    """A read-only connection used only on the thread that opened it (the event loop's)."""

    def __init__(self, conn: sqlite3.Connection, *, budget: int = BUDGET) -> None:
        self._conn = conn
        self._ticks_allowed = max(1, budget // TICK)
        self._ticks = 0
        self._over: dict[str, None] = {}
        self.inline_reads = 0
        self.sent_to_thread = 0
        conn.set_progress_handler(self._tick, TICK)

    @classmethod
    def open(cls, path: Path, configure: Callable[[sqlite3.Connection], None]) -> InlineReader:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            configure(conn)
            conn.execute(q.SET_BUSY_TIMEOUT.format(ms=0))  # never wait for a lock on the loop
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def _tick(self) -> int:
        self._ticks += 1
        return 1 if self._ticks > self._ticks_allowed else 0

    def run(self, fn: Callable[[sqlite3.Connection], T], key: str | None) -> tuple[bool, T | None]:
        """(True, fn's result) if the read ran here within the budget; (False, None) if it
        belongs in the reader thread. Exceptions other than SQLite's pass through."""
        if key is not None and key in self._over:
            self.sent_to_thread += 1
            return False, None
        self._ticks = 0
        try:
            value = fn(self._conn)
        except sqlite3.Error:
            over = self._ticks > self._ticks_allowed
            self._ticks = 0
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the thread's read reports faults
                    self._conn.execute(q.ROLLBACK)
            if over and key is not None:
                self._remember(key)
            self.sent_to_thread += 1
            return False, None
        self.inline_reads += 1
        return True, value

    def _remember(self, key: str) -> None:
        if len(self._over) >= REMEMBER:
            del self._over[next(iter(self._over))]
        self._over[key] = None

    def close(self) -> None:
        self._conn.close()
