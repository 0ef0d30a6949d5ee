"""The journal: every state change of every request, in SQLite, before anything depends on it.

`Journal` is the async facade the runtime and the API use. Writes go through one
group-commit writer (:mod:`daemon.journal.writer`) on one connection; reads use a second,
read-only connection, so that in WAL mode they neither wait for nor delay the writer. Each
write method returns once its transaction has committed, with the events it appended.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import msgspec
from loguru import logger

from daemon import ids
from daemon.chain import Chain, ChainPatch
from daemon.errors import BadRequest
from daemon.journal import merged, reads, schema, writes
from daemon.journal.checkpoint import Checkpointer
from daemon.journal.errors import JournalError, JournalUnavailable
from daemon.journal.inline import InlineReader
from daemon.journal.rows import (
    JobRow,
    LoadedRequest,
    RequestFilter,
    RequestRecord,
    TryEnd,
    WriterStats,
)
from daemon.journal.writer import Writer, run_in_connection_thread
from daemon.model import Event, JobLogRow, JobState, RequestDetail, RequestState, RequestView

__all__ = [
    "JobRow",
    "Journal",
    "LoadedRequest",
    "RequestFilter",
    "RequestRecord",
    "TryEnd",
    "WriterStats",
]

T = TypeVar("T")

MAX_PAGE = 10_000
#: the oldest SQLite the journal's statements run on (MATERIALIZED CTEs came in 3.35.0)
MIN_SQLITE = (3, 35, 0)


class Journal:
    """One journal file, open for reading and writing. Use `await Journal.open(path)`."""

    def __init__(
        self,
        path: Path,
        writer_db: aiosqlite.Connection,
        reader_db: aiosqlite.Connection,
        checkpointer: Checkpointer | None = None,
        inline: InlineReader | None = None,
    ) -> None:
        self.path = path
        self._writer_db = writer_db
        self._reader_db = reader_db
        self._writer = Writer(writer_db)
        #: WAL checkpoints off the writer's path (None: the writer checkpoints by itself)
        self._checkpointer = checkpointer
        #: small reads on the loop's own thread (None: every read goes to the reader thread)
        self._inline = inline
        #: called after every read with where it ran ("loop" or "thread"), e.g. for metrics
        self.on_read: Callable[[str], None] | None = None
        self._closed = False
        #: id of the boot row written by `start_boot` ("" until then)
        self.boot_id = ""

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: str = "NORMAL") -> Journal:
        """Open (creating and migrating if needed) a journal; refuses foreign or newer files,
        and an SQLite library too old for the journal's statements."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            need = ".".join(map(str, MIN_SQLITE))
            raise JournalError(
                f"SQLite {sqlite3.sqlite_version} is too old for the journal (it needs {need}:"
                " UPDATE ... FROM, MATERIALIZED common table expressions, JSON functions);"
                " use a Python built with a newer SQLite"
            )
        p = Path(path)
        writer_db, reader_db, applied = await schema.open_connections(p, synchronous)
        try:
            ckpt = await Checkpointer.open(p.absolute(), writer_db)
            try:
                inline = InlineReader.open(p.absolute(), schema.configure_reader)
            except BaseException:
                await ckpt.close()
                raise
        except BaseException:
            await writer_db.close()
            await reader_db.close()
            raise
        journal = cls(p.absolute(), writer_db, reader_db, ckpt, inline)
        journal._writer.start()
        ckpt.start(lambda: journal._writer.stats.commits)
        for name in applied:
            logger.bind(action="journal_migrated").info("journal {}: applied {}", p, name)
        return journal

    async def close(self) -> None:
        """Commit what is queued, then close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._checkpointer is not None:
                await self._checkpointer.close()
        finally:
            try:
                await self._writer.close()
            finally:
                await self._writer_db.close()
                await self._reader_db.close()
                if self._inline is not None:
                    self._inline.close()

    @property
    def stats(self) -> WriterStats:
        """A copy of the writer's counters; unhealthy also while checkpoints fail."""
        stats = msgspec.structs.replace(self._writer.stats)
        if self._checkpointer is not None and self._checkpointer.error:
            stats.healthy = False
            stats.last_error = self._checkpointer.error
        return stats

    @property
    def writer(self) -> Writer:
        """The group-commit writer (its `task` can be supervised)."""
        return self._writer

    # -- writes ------------------------------------------------------------------------------

    async def start_boot(self, pid: int, version: str, *, at: float | None = None) -> str:
        """Record this daemon start; its id stamps every try started from now on."""
        boot_id = ids.new_request_id()
        when = time.time() if at is None else at
        await self._writer.submit(writes.make_start_boot(boot_id, pid, version, when))
        self.boot_id = boot_id
        return boot_id

    async def create_request(
        self,
        rec: RequestRecord,
        chain: Chain,
        *,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        started_at: float | None = None,
    ) -> list[Event]:
        """The request, its chain and every job (PENDING) in one transaction. With
        `started_at`, the request is RUNNING from that time in the same transaction (its events:
        created PENDING, then RUNNING)."""
        write = writes.make_create_request(rec, chain, idempotency_key, body_hash)
        if started_at is not None:
            write = writes.combine(
                write,
                writes.make_set_request_state(
                    rec.id, RequestState.RUNNING, [RequestState.PENDING], started_at, ""
                ),
            )
        return await self._writer.submit(write, rec.id)

    async def set_request_state(
        self,
        request_id: str,
        state: RequestState,
        *,
        expect: Collection[RequestState],
        at: float,
        reason: str = "",
    ) -> list[Event]:
        """CAS the request's state; sets started_at on first RUNNING, finished_at when final."""
        write = writes.make_set_request_state(request_id, state, expect, at, reason)
        return await self._writer.submit(write, request_id)

    async def job_started(
        self, request_id: str, job_id: str, try_no: int, seq_try: int, at: float
    ) -> list[Event]:
        """CAS PENDING -> RUNNING and a RUNNING job_log row for the try, stamped with the boot."""
        write = writes.make_job_started(request_id, job_id, try_no, seq_try, at, self.boot_id)
        return await self._writer.submit(write, request_id)

    async def jobs_started(
        self, request_id: str, starts: Sequence[tuple[str, int, int]], *, at: float
    ) -> list[Event]:
        """`job_started` for several jobs of a request, (job id, try, seq_try) each, in one
        write: every RUNNING row commits or none does."""
        write = writes.make_jobs_started(request_id, starts, at, self.boot_id)
        return await self._writer.submit(write, request_id)

    async def job_finished(
        self,
        request_id: str,
        job_id: str,
        try_no: int,
        *,
        log_state: JobState,
        job_state: JobState,
        exit: int | None,
        error: str,
        stdout: str,
        stderr: str,
        outputs: dict[str, Any],
        at: float,
        then_start: Sequence[tuple[str, int, int]] = (),
    ) -> list[Event]:
        """CAS RUNNING -> job_state; the try's log row -> log_state; outputs if COMPLETE.

        `then_start`: (job_id, try, seq_try) of jobs to start (as `job_started` does) in the
        same transaction: a successor's RUNNING row commits with its predecessor's COMPLETE
        row, or neither does; one commit per job of a line instead of two.
        """
        end = TryEnd(
            job_id=job_id,
            try_no=try_no,
            log_state=log_state,
            job_state=job_state,
            exit=exit,
            error=error,
            stdout=stdout,
            stderr=stderr,
            outputs=outputs,
            then_start=tuple(then_start),
        )
        return await self.tries_ended(request_id, [end], at=at)

    async def tries_ended(
        self, request_id: str, ends: Sequence[TryEnd], *, at: float
    ) -> list[Event]:
        """`job_finished` for several tries of a request in one write: all of them (and the
        jobs each starts) commit, or none does. The events of all, in order."""
        return await self.queue_tries_ended(request_id, ends, at=at)

    def queue_tries_ended(
        self, request_id: str, ends: Sequence[TryEnd], *, at: float
    ) -> asyncio.Future[list[Event]]:
        """`tries_ended` without waiting: the write is queued now (or raises now); the future
        resolves with its events once it has committed."""
        if len(ends) != 1:
            write = writes.make_tries_ended(request_id, ends, at, self.boot_id)
            return self._writer.enqueue(write, request_id)
        # one try: a write the writer may merge with other requests' (daemon.journal.merged)
        write = merged.make_try_end(request_id, ends[0], at, self.boot_id)
        return self._writer.enqueue(write, request_id)

    async def interrupt_try(
        self,
        request_id: str,
        job_id: str,
        try_no: int,
        *,
        job_state: JobState,
        error: str,
        at: float,
    ) -> list[Event]:
        """A try that will not finish (older boot, shutdown): log row -> INTERRUPTED."""
        write = writes.make_interrupt_try(request_id, job_id, try_no, job_state, error, at)
        return await self._writer.submit(write, request_id)

    async def resume_request(
        self,
        request_id: str,
        interrupts: Sequence[tuple[str, int, JobState, str]],
        state: RequestState,
        *,
        expect: Collection[RequestState],
        reason: str,
        at: float,
    ) -> list[Event]:
        """A request taken up again at start, in one transaction: the tries an earlier boot
        left RUNNING, (job id, try, state the job is left in, error) each, marked INTERRUPTED;
        then the request's state (RUNNING, or SUSPENDED if it must wait for an operator)."""
        parts = [
            writes.make_interrupt_try(request_id, job_id, try_no, job_state, error, at)
            for job_id, try_no, job_state, error in interrupts
        ]
        parts.append(writes.make_set_request_state(request_id, state, expect, at, reason))
        return await self._writer.submit(writes.combine(*parts), request_id)

    async def apply_patch(
        self, request_id: str, patch: ChainPatch, *, at: float | None = None
    ) -> list[Event]:
        """Store an expansion, add its jobs (PENDING), mark the deferred node COMPLETE."""
        when = time.time() if at is None else at
        write = writes.make_apply_patch(request_id, patch, when)
        return await self._writer.submit(write, request_id)

    async def reset_jobs(
        self,
        request_id: str,
        job_ids: Collection[str],
        *,
        scope_id: str | None,
        scope_try: int | None,
        at: float,
    ) -> list[Event]:
        """Jobs back to PENDING: tries kept, outputs cleared, each job's seq_try (its run
        epoch) up by one; and scope_tries[scope_id] = scope_try."""
        write = writes.make_reset_jobs(request_id, job_ids, scope_id, scope_try, at)
        return await self._writer.submit(write, request_id)

    async def skip_job(
        self, request_id: str, job_id: str, *, user: str, reason: str, at: float
    ) -> list[Event]:
        """CAS PENDING/FAIL/STOPPED -> SKIPPED; the event records who and why."""
        write = writes.make_skip_job(request_id, job_id, user, reason, at)
        return await self._writer.submit(write, request_id)

    async def prune_finished(self, older_than: float, batch: int = 500) -> int:
        """Delete finished requests (and all their rows) finished before `older_than`.

        Runs as a series of small transactions through the writer, so other writes interleave.
        """
        total = 0
        while True:
            n: int = await self._writer.submit(writes.make_prune(older_than, batch))
            total += n
            if n < batch:
                return total

    # -- reads -------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T], key: str | None = None) -> T:
        """A read the API makes: on the loop's thread if it is small (`InlineReader`), else
        in the reader thread. `key` names it for the inline reader's memory of large reads."""
        if self._closed:
            raise JournalUnavailable("the journal is closed")
        if self._inline is not None:
            done, value = self._inline.run(fn, key)
            if done:
                if self.on_read is not None:
                    self.on_read("loop")
                return cast(T, value)
        return await self._read_in_thread(fn)

    async def _read_in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read in the reader thread: for reads that are large by nature (a whole chain to
        resume, a backup) and for those the inline reader sent on."""
        if self._closed:
            raise JournalUnavailable("the journal is closed")
        if self.on_read is not None:
            self.on_read("thread")
        try:
            return await run_in_connection_thread(self._reader_db, fn)
        except sqlite3.OperationalError as exc:
            raise JournalUnavailable(f"cannot read the journal: {exc}") from exc

    async def load_request(self, request_id: str) -> LoadedRequest | None:
        fn = partial(reads.load_request, request_id=request_id)
        return await self._read_in_thread(partial(reads.snapshot, fn=fn))

    async def unfinished_request_ids(self) -> list[str]:
        """PENDING, RUNNING and SUSPENDED requests, oldest first."""
        return await self._read_in_thread(reads.unfinished_request_ids)

    async def stale_running_tries(self) -> list[tuple[str, str, int, str]]:
        """(request id, job id, try, boot id) of the tries journaled RUNNING by an earlier
        boot: at start, the tries a crash interrupted (their processes may still run)."""
        return await self._read_in_thread(partial(reads.stale_running_tries, boot_id=self.boot_id))

    async def get_request(self, request_id: str) -> RequestDetail | None:
        fn = partial(reads.get_request, request_id=request_id)
        return await self._read(fn, f"detail {request_id}")

    async def get_view(self, request_id: str) -> RequestView | None:
        fn = partial(reads.get_view, request_id=request_id)
        return await self._read(fn, f"view {request_id}")

    async def find_requests(self, f: RequestFilter) -> list[RequestView]:
        """Newest first. An arg filter matches the arg's value as text."""
        if not 1 <= f.limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
        if f.offset < 0:
            raise BadRequest("offset must not be negative")
        params = reads.filter_params(f)
        # the same filter tends to match the same large requests (their totals count jobs)
        key = "find " + ",".join(f"{k}={v}" for k, v in params.items())
        return await self._read(partial(reads.find_requests, params=params), key)

    async def count_by_state(self) -> dict[str, int]:
        """Requests per state, for metrics."""
        return await self._read(reads.count_by_state, "count by state")

    async def job_log(self, request_id: str, job_id: str | None = None) -> list[JobLogRow]:
        fn = partial(reads.job_log, request_id=request_id, job_id=job_id)
        return await self._read(fn, f"log {request_id} {job_id}")

    async def events_after(self, request_id: str, after_seq: int, limit: int = 1000) -> list[Event]:
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
        fn = partial(reads.events_after, request_id=request_id, after_seq=after_seq, limit=limit)
        return await self._read(fn, f"events {request_id} {limit}")

    async def backlog(
        self, request_id: str, after_seq: int, limit: int = 1000
    ) -> tuple[list[Event], bool] | None:
        """A follower's read, in one snapshot: the events after `after_seq` (at most `limit`)
        and whether the request is finished; None if there is no such request."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
        fn = partial(reads.backlog, request_id=request_id, after_seq=after_seq, limit=limit)
        # a request with a long backlog pages through full pages: once one was too large,
        # the next go to the thread directly
        return await self._read(partial(reads.snapshot, fn=fn), f"events {request_id} {limit}")

    async def find_idempotent(self, key: str) -> tuple[str, str] | None:
        """(request_id, body_hash) of the request created with this idempotency key."""
        return await self._read(partial(reads.find_idempotent, key=key))

    async def backup(self, dest: str | Path) -> None:
        """A consistent copy of the journal (SQLite online backup), while writes continue."""
        target = Path(dest).absolute()
        try:
            await self._read_in_thread(partial(reads.backup, dest=target))
        except OSError as exc:
            raise JournalError(f"cannot write a backup to {target}: {exc}") from exc

    async def integrity_check(self) -> str:
        """SQLite's integrity check: "ok", or its list of problems."""
        return await self._read_in_thread(reads.integrity_check)
