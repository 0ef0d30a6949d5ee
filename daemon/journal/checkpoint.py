"""WAL checkpoints off the writer's path: a third connection copies the WAL into the database.

In WAL mode SQLite checkpoints from inside a COMMIT once the WAL passes `wal_autocheckpoint`
pages (1000 by default): every ~100th commit of the writer then also copies pages into the
database file and syncs it, and a chain of jobs waits for that. Here the writer's automatic
checkpoint is only a backstop (`BACKSTOP_PAGES`); a task checkpoints (PASSIVE: it never blocks
the writer or readers) on its own connection, in that connection's thread, every `INTERVAL`
seconds in which something was committed. Commits and their durability are unchanged: a
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
#: the writer still checkpoints by itself past this many WAL pages (64 MiB of 4 KiB pages)
BACKSTOP_PAGES = 16384

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
        self._warned = False
        self.checkpoints = 0

    @classmethod
    async def open(cls, path: Path, writer_db: aiosqlite.Connection) -> Checkpointer:
        """Connect (read-only statements; checkpoints are allowed) and take over from the
        writer's automatic checkpoint; `start()` runs the loop."""
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await run_in_connection_thread(db, lambda c: schema.configure(c, "", writer=False))
            await run_in_connection_thread(
                writer_db, lambda c: c.execute(_AUTOCHECKPOINT.format(pages=BACKSTOP_PAGES))
            )
        except BaseException:
            await db.close()
            raise
        return cls(db)

    def start(self, commits: Callable[[], int]) -> None:
        """Checkpoint every INTERVAL in which `commits()` (the writer's count) moved."""
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
            if now == seen:
                continue
            seen = now
            try:
                await self.checkpoint()
            except sqlite3.Error as exc:
                # not fatal: the writer's backstop checkpoint still bounds the WAL
                if not self._warned:
                    self._warned = True
                    logger.warning("journal checkpoint failed (logged once): {}", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._db.close()
