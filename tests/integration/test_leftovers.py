"""Cleaning up after a crashed boot, against real processes, real signals and real files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from daemon import leftovers
from daemon.orphans import live_groups, marker_env

J = "/srv/spind/spind.db"
OLD, NOW = "01HOLDBOOT0000000000000000", "01HNOWBOOT0000000000000000"
STALE = [("R1", "j1", 1, OLD)]

# Each script starts a child in its own group, then waits; `stubborn` ignores SIGTERM (and so
# does its child, which inherits that).
POLITE = "sleep 60 & wait"
STUBBORN = "trap '' TERM; sleep 60 & wait"


def job_env(journal: str = J, boot: str = OLD, rid: str = "R1", try_no: int = 1) -> dict[str, str]:
    return {
        **os.environ,
        **marker_env(journal, boot),
        "SPIND_REQUEST_ID": rid,
        "SPIND_JOB_ID": "j1",
        "SPIND_TRY": str(try_no),
    }


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if group_alive(p.pid):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def group_alive(pgid: int) -> bool:
    return bool(live_groups(leftovers.scan(markers=False), {pgid}))


def spawn(started: list[subprocess.Popen[bytes]], script: str, env: dict[str, str]) -> int:
    p = subprocess.Popen(["/bin/sh", "-c", script], env=env, start_new_session=True)
    started.append(p)
    return p.pid


def wait_for_child(pgid: int, timeout: float = 10.0) -> None:
    """Until the group has its `sleep` child (two members)."""
    deadline = time.monotonic() + timeout
    while sum(1 for p in leftovers.scan(markers=False) if p.pgid == pgid) < 2:
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("script", "env", "stopped", "killed"),
    [
        (POLITE, job_env(), True, False),
        (STUBBORN, job_env(), True, True),
        (POLITE, job_env(boot=NOW), False, False),  # a try of this boot
        (POLITE, job_env(try_no=2), False, False),  # a try the journal does not show RUNNING
        (POLITE, job_env(journal="/other/spind.db"), False, False),  # another daemon's job
        (POLITE, {**os.environ}, False, False),  # not a job at all
    ],
)
async def test_stop_orphans(
    procs: list[subprocess.Popen[bytes]],
    script: str,
    env: dict[str, str],
    stopped: bool,
    killed: bool,
) -> None:
    pgid = spawn(procs, script, env)
    wait_for_child(pgid)
    records: list[dict[str, Any]] = []
    handler = logger.add(lambda m: records.append(dict(m.record)), level="DEBUG")
    try:
        groups = await leftovers.stop_orphans(journal=J, stale_tries=STALE, grace=0.3)
    finally:
        logger.remove(handler)
    assert [g.pgid for g in groups] == ([pgid] if stopped else [])
    assert group_alive(pgid) is not stopped
    actions = [r["extra"].get("action") for r in records]
    assert ("orphan_kill" in actions) is killed
    assert "orphan_survived" not in actions
    if stopped:
        # the leader and its child are logged, each with its try's ids and its pid
        logged = [r["extra"] for r in records if r["extra"].get("action") == "orphan_stop"]
        assert len(logged) == 2
        assert {(e["request_id"], e["job_id"], e["try_"]) for e in logged} == {("R1", "j1", 1)}
        assert pgid in {e["pid"] for e in logged}
        assert procs[0].wait(5) == (-signal.SIGKILL if killed else -signal.SIGTERM)


async def test_without_proc_nothing_is_found(tmp_path: Path) -> None:
    groups = await leftovers.stop_orphans(
        journal=J, stale_tries=STALE, grace=0.1, proc_root=str(tmp_path / "no-proc")
    )
    assert groups == []
    assert leftovers.scan(str(tmp_path / "no-proc")) == []


def test_scan_sees_this_process_and_its_marker(procs: list[subprocess.Popen[bytes]]) -> None:
    pid = spawn(procs, "sleep 60", job_env())
    found = {p.pid: p for p in leftovers.scan()}
    assert found[os.getpid()].pgid == os.getpgid(0)
    assert found[pid].pgid == pid
    marker = found[pid].marker
    assert marker is not None and marker.ref() == STALE[0]


@pytest.mark.parametrize(
    ("before", "after", "removed"),
    [
        (None, [], 0),  # created
        ([], [], 0),
        (
            ["spind-output-abc.txt", "spind-output-x", "keep.txt", "spind-outputs"],
            ["keep.txt", "spind-outputs"],
            2,
        ),
        (["spind-output-dir/"], ["spind-output-dir"], 0),  # directories are not ours
    ],
)
def test_prepare_tmp_dir(
    tmp_path: Path, before: list[str] | None, after: list[str], removed: int
) -> None:
    d = leftovers.tmp_dir_for(tmp_path / "spind.db")
    assert d == tmp_path / "spind.db.tmp"
    if before is not None:
        d.mkdir()
        for name in before:
            if name.endswith("/"):
                (d / name).mkdir()
            else:
                (d / name).write_text("x")
    assert leftovers.prepare_tmp_dir(d) == removed
    assert sorted(os.listdir(d)) == after
    if before is None:
        assert d.stat().st_mode & 0o777 == 0o700 & ~_umask()


def test_prepare_tmp_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    d = tmp_path / "spind.db.tmp"
    d.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        leftovers.prepare_tmp_dir(d)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
