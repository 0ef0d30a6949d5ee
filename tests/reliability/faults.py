"""Journal faults made real: a full tmpfs, another process holding the write lock, the file
size limit (RLIMIT_FSIZE) of the daemon; and the helpers the journal fault tests share."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Daemon


def can_mount() -> str:
    """'' if this process may mount a tmpfs, else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount commands"
    return ""


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def health(d: Daemon) -> tuple[int, dict[str, Any]]:
    status, body = d.call("GET", "/api/v1/health")
    return status, body if isinstance(body, dict) else {}


# ---- the faults: each makes the journal unwritable, then lets it be written again


class Fault:
    name = ""

    def __init__(self, d: Daemon, mnt: Path | None) -> None:
        self.d = d
        self.mnt = mnt

    def inject(self) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError


class DiskFull(Fault):
    """Fill the tmpfs that holds the journal: the WAL cannot grow."""

    def inject(self) -> None:
        assert self.mnt is not None
        with open(self.mnt / "filler", "wb", buffering=0) as f:
            for size in (1 << 16, 1 << 12):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * size)

    def clear(self) -> None:
        assert self.mnt is not None
        (self.mnt / "filler").unlink()


class Locked(Fault):
    """Another process takes the journal's write lock and keeps it past the busy timeout."""

    def inject(self) -> None:
        self.conn = sqlite3.connect(self.d.journal, isolation_level=None, timeout=30)
        self.conn.execute("BEGIN EXCLUSIVE")

    def clear(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


class FileSizeLimit(Fault):
    """RLIMIT_FSIZE on the daemon: no file it writes may grow past its size now."""

    def inject(self) -> None:
        assert self.d.proc is not None
        var = self.d.journal.parent
        biggest = max(p.stat().st_size for p in var.iterdir() if p.is_file())
        self.old = resource.prlimit(self.d.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.d.proc.pid, resource.RLIMIT_FSIZE, (biggest, self.old[1]))

    def clear(self) -> None:
        assert self.d.proc is not None
        resource.prlimit(self.d.proc.pid, resource.RLIMIT_FSIZE, self.old)


#: name -> (fault, needs a tmpfs). A read-only remount is refused while the daemon has the
#: journal open for writing ("mount point is busy"): see test_read_only_journal_at_start.
FAULTS: dict[str, tuple[type[Fault], bool]] = {
    "disk-full": (DiskFull, True),
    "locked": (Locked, False),
    "fsize": (FileSizeLimit, False),
}
