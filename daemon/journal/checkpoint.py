"""WAL checkpoints mostly off the writer's path: a third connection copies the WAL into the
database file while the writer goes on committing.

In WAL mode SQLite checkpoints from inside a COMMIT once the WAL passes `wal_autocheckpoint`
pages (1000 by default): every ~100th commit of the writer then also copies pages into the
database file and syncs it, and every chain waits for that. Here a task checkpoints (PASSIVE:
it never blocks the writer or readers) on its own connection, in that connection's thread,
every `INTERVAL` seconds in which something was committed. The writer still checkpoints by
itself, but only every `WRITER_PAGES` pages: a PASSIVE checkpoint cannot restart the WAL
while commits keep coming, the writer's own checkpoint does (and finds most pages copied
already), so the WAL stays under ~16 MiB. Commits and their durability are unchanged: a
commit is in the WAL (synced with synchronous=FULL) before anyone hears of it, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiosqlite
from loguru import logger

from daemon.journal import schema
from daemon.journal.writer import run_in_connection_thread

#: seconds between checkpoints (when something was committed meanwhile)
INTERVAL = 0.25
#: the writer checkpoints by itself (and restarts the WAL) past this many WAL pages
WRITER_PAGES = 4096

_PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"
_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint = {pages:d}"


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(busy, WAL frames, frames checkpointed) as SQLite reports them."""
    busy, frames, done = conn.execute(_PASSIVE).fetchone()
    return int(busy), int(frames), int(done)


class Checkpointer:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._commits: Callable[[], int] = lambda: 0
        self._task: asyncio.Task[None] | None = None
        self.checkpoints = 0
        #: why the last checkpoint failed ("" once one succeeds): the database file cannot be
        #: written (disk full, file size limit, I/O error), so the journal reports itself
        #: unhealthy even while commits still fit in the WAL
        self.error = ""

    @classmethod
    async def open(cls, path: Path, writer_db: aiosqlite.Connection) -> Checkpointer:
        """Connect (read-only statements; checkpoints are allowed) and take over from the
        writer's automatic checkpoint; `start()` runs the loop."""
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await run_in_connection_thread(db, lambda c: schema.configure(c, "", writer=False))
            await run_in_connection_thread(
                writer_db, lambda c: c.execute(_AUTOCHECKPOINT.format(pages=WRITER_PAGES))
            )
        except BaseException:
            await db.close()
            raise
        return cls(db)

    def start(self, commits: Callable[[], int]) -> None:
        """Checkpoint every INTERVAL in which `commits()` (the writer's count) moved, and
        every INTERVAL while the last checkpoint failed (so that health recovers when the
        fault clears, even if nothing commits any more)."""
        self._commits = commits
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="journal-checkpoint"
            )

    async def checkpoint(self) -> tuple[int, int, int]:
        result = await run_in_connection_thread(self._db, _checkpoint)
        self.checkpoints += 1
        return result

    async def _run(self) -> None:
        seen = self._commits()
        while True:
            await asyncio.sleep(INTERVAL)
            now = self._commits()
            if now == seen and not self.error:
                continue  # nothing new; a failed checkpoint is tried again until it succeeds
            seen = now
            try:
                await self.checkpoint()
            except sqlite3.Error as exc:
                if not self.error:
                    logger.bind(action="journal_checkpoint_failed").error(
                        "journal checkpoint failed, the database file cannot be written: {}", exc
                    )
                self.error = f"checkpoint: {type(exc).__name__}: {exc}"
                continue
            if self.error:
                self.error = ""
                logger.bind(action="journal_recovered").info("journal checkpoints succeed again")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._db.close()
