"""The group-commit writer: one task commits every write to the journal.

A caller submits a *write*: a plain function of the `sqlite3.Connection` that runs its
statements (compare-and-set updates, inserts) and returns a result, or raises. The writer
takes whatever is waiting (up to `max_batch` writes) and commits it as ONE transaction:

    BEGIN IMMEDIATE; write 1; write 2; ...; COMMIT

Each caller's future resolves only after COMMIT returned. A write that raises (say
`IllegalTransition`) fails alone; the others commit. Refusals are rare, so a batch first runs
without savepoints; if a write raises, the whole transaction is rolled back and the batch runs
again with one savepoint per write:

    BEGIN IMMEDIATE
      SAVEPOINT; write 1; RELEASE          (or ROLLBACK TO: only write 1 fails)
      SAVEPOINT; write 2; RELEASE
      ...
    COMMIT

(writes are functions of the connection over values fixed when they were made, so running one
twice is safe). In the optimistic pass, the single-try ends of a batch
(`daemon.journal.merged.TryEndWrite`) run as merged writes where `merge_plan` allows; the
savepoint pass runs each write alone. A
fault of the database itself (disk full, read-only file, I/O error), or a failed COMMIT,
rolls back the whole batch and fails every future in it with `JournalUnavailable`; the
writer records the error and keeps serving later batches, so the daemon recovers when the
fault clears. Success is never reported for a write that did not commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import aiosqlite
from loguru import logger

from daemon.journal import queries as q
from daemon.journal.errors import JournalUnavailable
from daemon.journal.merged import TryEndWrite, run_merged
from daemon.journal.rows import WriterStats
from daemon.mailbox import Mailbox

T = TypeVar("T")

#: Primary SQLite result codes that mean the database (not one write) is at fault.
_FAULT_CODES = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        9,  # SQLITE_INTERRUPT
        10,  # SQLITE_IOERR
        11,  # SQLITE_CORRUPT
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        26,  # SQLITE_NOTADB
    }
)


async def run_in_connection_thread(
    db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]
) -> T:
    """Run `fn(conn)` in the aiosqlite worker thread that owns `db`: one hop, many statements.

    aiosqlite runs every call on a connection in that connection's own thread: its
    `Connection._execute(function)` queues the function to that thread and awaits its result,
    and every public method (`execute`, `commit`, `backup`, `create_function`, ...) is a thin
    wrapper over it. We hand it our own function, which receives the raw `sqlite3.Connection`
    (`Connection._conn`, only ever touched in that thread). A whole batch (BEGIN, every
    write's statements, COMMIT) or a whole multi-query read then costs one thread hop instead
    of one per statement, and nothing else can run on the connection in between.
    """
    # (the type as a string: a subscripted Callable made at run time cost ~2 us a call)
    execute = cast("Callable[[Callable[[], T]], Awaitable[T]]", db._execute)
    return await execute(lambda: fn(db._conn))


def is_fault(exc: BaseException) -> bool:
    """True if `exc` is the database failing rather than one write being refused."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return True
    return (code & 0xFF) in _FAULT_CODES


_Outcome = tuple[bool, Any]


def _run_item(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> _Outcome:
    conn.execute(q.SAVEPOINT)
    try:
        result = fn(conn)
    except Exception as exc:
        # A fault, or an error after which SQLite already rolled the transaction back: the
        # batch cannot commit.
        if is_fault(exc) or not conn.in_transaction:
            raise
        conn.execute(q.ROLLBACK_TO_SAVEPOINT)
        conn.execute(q.RELEASE_SAVEPOINT)
        return (False, exc)
    conn.execute(q.RELEASE_SAVEPOINT)
    return (True, result)


class _Refused(Exception):
    """A write of an optimistic (savepoint-free) batch raised: run the batch again with
    savepoints."""


def merge_plan(
    fns: Sequence[Callable[[sqlite3.Connection], Any]], requests: Sequence[str | None]
) -> list[list[int]]:
    """The order to run a batch's writes in: groups of positions, a group of several being
    one merged write of single-try ends (`daemon.journal.merged`). A try end joins the open
    group, i.e. runs before the writes between them, unless one of those is of its request
    (so each request's writes keep their order) or of no known request (a barrier: nothing
    moves across it). Writes of different requests touch different rows, so the journal ends
    up the same; only the events' numbers across requests follow the new order."""
    plan: list[list[int]] = []
    group: list[int] | None = None
    passed: set[str] = set()  # requests with a write since the group opened, not in it
    for i, fn in enumerate(fns):
        if isinstance(fn, TryEndWrite):
            if group is not None and fn.request_id not in passed:
                group.append(i)
            else:
                group = [i]
                plan.append(group)
                passed = set()
            continue
        plan.append([i])
        request = requests[i]
        if request is None:
            group = None
        elif group is not None:
            passed.add(request)
    return plan


def _run_optimistic(
    conn: sqlite3.Connection,
    fns: list[Callable[[sqlite3.Connection], Any]],
    requests: Sequence[str | None],
) -> list[_Outcome]:
    """Run every write, in `merge_plan`'s order; the outcomes in the batch's order. Any
    refusal: `_Refused`."""
    outcomes: list[_Outcome | None] = [None] * len(fns)
    for group in merge_plan(fns, requests):
        try:
            if len(group) > 1:
                writes = [cast(TryEndWrite, fns[i]) for i in group]
                for i, events in zip(group, run_merged(conn, writes), strict=True):
                    outcomes[i] = (True, events)
            else:
                outcomes[group[0]] = (True, fns[group[0]](conn))
        except Exception as exc:
            if is_fault(exc) or not conn.in_transaction:
                raise
            raise _Refused from exc
    return [o for o in outcomes if o is not None]


def run_batch(
    conn: sqlite3.Connection,
    fns: list[Callable[[sqlite3.Connection], Any]],
    requests: Sequence[str | None] | None = None,
) -> tuple[list[_Outcome], float]:
    """Run writes as one transaction (in the connection's thread); (outcomes, elapsed ms).
    `requests`: the request each write is about (None: unknown), for `merge_plan`."""
    start = time.perf_counter()
    conn.execute(q.BEGIN_IMMEDIATE)
    try:
        try:
            outcomes = _run_optimistic(conn, fns, requests or [None] * len(fns))
        except _Refused:
            # one write was refused: undo everything, then isolate each write in a savepoint
            conn.execute(q.ROLLBACK)
            conn.execute(q.BEGIN_IMMEDIATE)
            outcomes = [_run_item(conn, fn) for fn in fns]
        conn.execute(q.COMMIT)
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute(q.ROLLBACK)
            except sqlite3.Error as exc:
                logger.warning("journal rollback failed: {}", exc)
        raise
    return outcomes, (time.perf_counter() - start) * 1000.0


@dataclass(slots=True)
class _Item:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    request: str | None


class Writer:
    """The one task that writes to the journal's connection."""

    def __init__(self, db: aiosqlite.Connection, *, max_batch: int = 512) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._db = db
        self._max_batch = max_batch
        self._queue: Mailbox[_Item | None] = Mailbox()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.stats = WriterStats()
        #: called after every commit with (seconds, writes in the batch), e.g. for metrics
        self.on_commit: Callable[[float, int], None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def pending(self) -> int:
        """Writes waiting for the next batch."""
        return self._queue.qsize()

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="journal-writer")
        return self._task

    async def submit(self, fn: Callable[[sqlite3.Connection], T], request: str | None = None) -> T:
        """Queue a write; returns its result once the batch holding it has committed.
        `request`: the one request the write changes, if any (see `merge_plan`).

        A caller cancelled while waiting does not withdraw the write: it may still commit.
        """
        return await self.enqueue(fn, request)

    def enqueue(
        self, fn: Callable[[sqlite3.Connection], T], request: str | None = None
    ) -> asyncio.Future[T]:
        """Queue a write; a future of its result, resolved once the batch holding it has
        committed (for callers that react in a callback instead of a task of their own)."""
        if self._closing:
            raise JournalUnavailable("the journal is closed")
        if self._task is None or self._task.done():
            raise JournalUnavailable("the journal writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(fn, future, request))
        return future

    async def close(self) -> None:
        """Commit every write already queued, then stop. Idempotent."""
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            stop = False
            while not stop:
                first = await self._queue.get()
                batch: list[_Item] = []
                if first is None:
                    stop = True
                else:
                    batch.append(first)
                while not stop and len(batch) < self._max_batch and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        stop = True
                    else:
                        batch.append(item)
                if batch:
                    await self._commit(batch)
        finally:
            # Only reached with items left if the task was cancelled: never leave a caller hanging.
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None and not item.future.done():
                    item.future.set_exception(JournalUnavailable("the journal writer stopped"))

    async def _commit(self, batch: list[_Item]) -> None:
        fns = [item.fn for item in batch]
        requests = [item.request for item in batch]
        try:
            outcomes, elapsed_ms = await run_in_connection_thread(
                self._db, partial(run_batch, fns=fns, requests=requests)
            )
        except asyncio.CancelledError:
            self._fail(batch, "the journal writer was cancelled; the batch may not be saved")
            raise
        except Exception as exc:
            self.stats.failed_batches += 1
            self.stats.healthy = False
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            logger.bind(action="journal_write_failed").error(
                "journal batch of {} writes failed, nothing saved: {}", len(batch), exc
            )
            self._fail(batch, f"journal write failed, nothing was saved: {exc}", exc)
            return
        if not self.stats.healthy:
            logger.bind(action="journal_recovered").info("journal writes succeed again")
        self.stats.commits += 1
        self.stats.last_batch = len(batch)
        self.stats.last_commit_ms = elapsed_ms
        self.stats.healthy = True
        if self.on_commit is not None:
            try:
                self.on_commit(elapsed_ms / 1000.0, len(batch))
            except Exception as exc:  # a metrics hook must never break the journal
                logger.warning("journal on_commit hook failed: {}", exc)
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            self.stats.items += ok
            if item.future.done():  # the caller was cancelled; the write committed anyway
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)

    @staticmethod
    def _fail(batch: list[_Item], message: str, cause: BaseException | None = None) -> None:
        for item in batch:
            if not item.future.done():
                err = JournalUnavailable(message)
                err.__cause__ = cause
                item.future.set_exception(err)
