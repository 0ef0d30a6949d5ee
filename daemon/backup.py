"""`spind backup` and `spind restore`, and the lock that keeps one daemon per journal.

A backup is SQLite's online backup of the live journal: consistent while the daemon writes,
taken from another process through a read-only connection. A restore copies a backup over
the journal of a daemon that is not running (the daemon holds `<journal>.lock` while it runs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path

from daemon.journal import queries as q


class BackupError(Exception):
    """The backup or restore could not be done; the message says why."""


def _lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


class JournalLock:
    """An exclusive flock on `<journal>.lock`, held for the life of the daemon."""

    def __init__(self, journal: str | Path) -> None:
        self.path = _lock_path(Path(journal))
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None


def is_locked(journal: str | Path) -> bool:
    lock = JournalLock(journal)
    if not lock.path.exists():
        return False
    if lock.acquire():
        lock.release()
        return False
    return True


def _check_spind(conn: sqlite3.Connection, what: str) -> None:
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{what} is not a SQLite database: {exc}") from exc
    if app_id != q.APPLICATION_ID:
        raise BackupError(f"{what} is not a spind journal (application_id {app_id:#x})")
    result = conn.execute("PRAGMA quick_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{what} fails SQLite's check: {result}")


def backup(journal: str | Path, dest: str | Path) -> int:
    """Copy the live journal to `dest` (mode 0600). Returns the size in bytes."""
    src_path = Path(journal)
    dest_path = Path(dest)
    if not src_path.exists():
        raise BackupError(f"no journal at {src_path}")
    if dest_path.exists():
        raise BackupError(f"{dest_path} exists; choose a new file name")
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    try:
        _check_spind(src, str(src_path))
        fd = os.open(dest_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(dest_path)
        try:
            src.backup(dst, pages=1024)
        finally:
            dst.close()
    finally:
        src.close()
    return dest_path.stat().st_size


def restore(backup_file: str | Path, journal: str | Path) -> None:
    """Replace the journal of a stopped daemon with a backup."""
    src_path = Path(backup_file)
    dest_path = Path(journal)
    if not src_path.exists():
        raise BackupError(f"no backup at {src_path}")
    if is_locked(dest_path):
        raise BackupError(f"a spind daemon is running on {dest_path}: stop it first")
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    try:
        _check_spind(src, str(src_path))
        dest_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = dest_path.with_name(dest_path.name + ".restore")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            dest_path.with_name(dest_path.name + suffix).unlink()
    os.replace(tmp, dest_path)
