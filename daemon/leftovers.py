"""What a crashed boot left behind, cleaned up at start before any chain resumes.

- **Job processes.** After `kill -9` of the daemon outside systemd, the shell jobs it ran go
  on (each has its own session). :func:`stop_orphans` finds those whose tries the journal still
  shows RUNNING under an earlier boot (see :mod:`daemon.orphans`), sends SIGTERM to each one's
  process group, then SIGKILL to the groups still alive after the stop grace, so that the new
  try of such a job never overlaps the old one. Linux only: without /proc it finds nothing.
- **Temporary files.** Shell jobs' `$SPIND_OUTPUT` files live in `<journal>.tmp/`, which
  :func:`prepare_tmp_dir` creates (mode 0700) and empties of the files of earlier boots.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path

from loguru import logger

from daemon.jobs.shell import OUTPUT_PREFIX
from daemon.orphans import (
    Orphan,
    Proc,
    TryRef,
    live_groups,
    marker_of,
    orphan_groups,
    parse_environ,
    parse_stat,
    protected_groups,
)

PROC_ROOT = "/proc"
#: Seconds to wait for the groups to vanish after SIGKILL before reporting them.
KILL_WAIT = 5.0
#: Seconds between two looks at whether the signalled groups are gone.
POLL_INTERVAL = 0.05


def tmp_dir_for(journal: str | Path) -> Path:
    """The daemon's directory for temporary files: `<journal>.tmp` beside the journal."""
    p = Path(journal)
    return p.with_name(p.name + ".tmp")


def prepare_tmp_dir(path: Path) -> int:
    """Create `path` (mode 0700) or empty it of earlier boots' output files; returns how many
    were removed. Raises OSError if it cannot be made a directory."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"{path} exists and is not a directory") from None
    with os.scandir(path) as entries:
        stale = [
            e.path
            for e in entries
            if e.name.startswith(OUTPUT_PREFIX) and not e.is_dir(follow_symlinks=False)
        ]
    for file in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file)
    return len(stale)


def scan(proc_root: str = PROC_ROOT, *, markers: bool = True) -> list[Proc]:
    """Every process this daemon may signal (all as root, else those of its own uid), with
    its marker (if `markers`). Processes that vanish or cannot be read are skipped."""
    uid = os.geteuid()
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return []
    out: list[Proc] = []
    for entry in entries:
        if not entry.isdigit():
            continue
        base = os.path.join(proc_root, entry)
        try:
            if uid != 0 and os.stat(base).st_uid != uid:
                continue
            with open(os.path.join(base, "stat"), "rb") as f:
                stat = parse_stat(f.read().decode("utf-8", "replace"))
            if stat is None:
                continue
            marker = None
            if markers:
                with open(os.path.join(base, "environ"), "rb") as f:
                    marker = marker_of(parse_environ(f.read()))
        except OSError:
            continue
        out.append(Proc(pid=int(entry), state=stat[0], ppid=stat[1], pgid=stat[2], marker=marker))
    return out


def _signal_groups(pgids: Collection[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


async def _wait_gone(pgids: set[int], timeout: float, proc_root: str) -> set[int]:
    """Poll until no group of `pgids` has a live process; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        procs = await asyncio.to_thread(scan, proc_root, markers=False)
        alive = live_groups(procs, pgids)
        if not alive or time.monotonic() >= deadline:
            return alive
        await asyncio.sleep(POLL_INTERVAL)


async def stop_orphans(
    *,
    journal: str,
    stale_tries: Collection[TryRef],
    grace: float,
    proc_root: str = PROC_ROOT,
) -> list[Orphan]:
    """Stop the process groups of the tries in `stale_tries` that are still running (see the
    module doc); returns the groups it signalled. Each marked process is logged."""
    if not stale_tries:
        return []
    procs = await asyncio.to_thread(scan, proc_root)
    groups = orphan_groups(
        procs,
        journal=journal,
        stale_tries=stale_tries,
        protected=protected_groups(procs, os.getpid()),
    )
    for group in groups:
        for pid, m in group.members:
            logger.warning(
                "process {} of try {} of job {} is still running from boot {}: "
                "SIGTERM to its process group {}",
                pid,
                m.try_no,
                m.job_id,
                m.boot,
                group.pgid,
                request_id=m.request_id,
                job_id=m.job_id,
                try_=m.try_no,
                pid=pid,
                action="orphan_stop",
            )
    if not groups:
        return []
    pgids = {g.pgid for g in groups}
    _signal_groups(pgids, signal.SIGTERM)
    alive = await _wait_gone(pgids, grace, proc_root)
    if alive:
        logger.warning(
            "process groups {} did not stop within {:g}s: SIGKILL",
            sorted(alive),
            grace,
            action="orphan_kill",
        )
        _signal_groups(alive, signal.SIGKILL)
        alive = await _wait_gone(alive, KILL_WAIT, proc_root)
    for pgid in sorted(alive):
        logger.error(
            "process group {} is still alive {:g}s after SIGKILL (uninterruptible I/O?): "
            "it may overlap the new try of its job",
            pgid,
            KILL_WAIT,
            action="orphan_survived",
        )
    return groups
