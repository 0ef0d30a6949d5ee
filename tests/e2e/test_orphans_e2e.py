"""`kill -9` of a real daemon while a shell job runs: the job's processes outlive the daemon;
the next daemon on the same journal stops them (and removes their output file) before the new
try of the job starts, and leaves another daemon's jobs alone.

The job writes a ledger: `JOB TRY start PID OUTPUT`, `JOB TRY pid CHILD`, `JOB TRY term` when
SIGTERM reaches it (polite mode), and, first thing in every try, `JOB TRY overlap PID` for each
process of an earlier try of the job that is still alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, eventually, ledger_lines

pytestmark = pytest.mark.timeout(120)

JOB = r"""
L="$SPIND_ARG_ledger"
if [ -f "$L" ]; then
  while read -r job try what pid rest; do
    if [ "$what" = start ] || [ "$what" = pid ]; then
      if [ "$try" != "$SPIND_TRY" ] && [ -r "/proc/$pid/stat" ] \
          && [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ]; then
        echo "$SPIND_JOB_ID $SPIND_TRY overlap $pid" >> "$L"
      fi
    fi
  done < "$L"
fi
echo "$SPIND_JOB_ID $SPIND_TRY start $$ $SPIND_OUTPUT" >> "$L"
[ "$SPIND_TRY" = 1 ] || exit 0
if [ "$SPIND_ARG_mode" = stubborn ]; then
  trap '' TERM
else
  trap 'echo "$SPIND_JOB_ID $SPIND_TRY term" >> "$L"; exit 143' TERM
fi
sleep 600 &
echo "$SPIND_JOB_ID $SPIND_TRY pid $!" >> "$L"
wait
"""


def _specs() -> dict[str, str]:
    cmd = "\n".join("            " + line for line in JOB.strip().splitlines())
    return {
        "orphan.yaml": f"""
sequences:
  orphan:
    request: true
    args:
      required: [{{name: ledger}}, {{name: mode}}]
    nodes:
      work:
        category: job
        type: shell
        args: [ledger, mode]
        with:
          cmd: |
{cmd}
"""
    }


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def first_try(ledger: Path) -> tuple[list[int], str]:
    """(pids of try 1: its shell and its `sleep`, its output file) once both are written."""
    lines = ledger_lines(ledger)
    start = [ln for ln in lines if ln[1:3] == ["1", "start"]]
    child = [ln for ln in lines if ln[1:3] == ["1", "pid"]]
    if not (start and child):
        return [], ""
    return [int(start[0][3]), int(child[0][3])], start[0][4]


def _clean_up(daemons: list[Daemon], pids: list[int]) -> None:
    for daemon in daemons:
        daemon.close()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["polite", "stubborn"])
def test_kill9_job_processes_stopped_before_the_new_try(tmp_path: Path, mode: str) -> None:
    env = {"SPIND_JOB_STOP_GRACE": "500ms", "SPIND_SHUTDOWN_GRACE": "0"}
    d = Daemon(tmp_path / "main", _specs(), env=env)
    other = Daemon(tmp_path / "other", _specs(), env=env)  # another journal, another daemon
    ledger, other_ledger = tmp_path / "ledger", tmp_path / "other-ledger"
    pids: list[int] = []
    try:
        d.start()
        other.start()
        rid = d.start_request("orphan", ledger=str(ledger), mode=mode)
        other.start_request("orphan", ledger=str(other_ledger), mode=mode)
        pids, output = eventually(lambda: first_try(ledger)[0] and first_try(ledger))
        other_pids, _ = eventually(lambda: first_try(other_ledger)[0] and first_try(other_ledger))
        pids += other_pids

        d.kill9()
        assert all(alive(p) for p in pids)  # the crash left the job running
        assert Path(output).parent == d.journal.with_name("spind.db.tmp")
        assert Path(output).exists()

        d.start()
        req = d.wait_state(rid)
        assert req["state"] == "COMPLETE", req
        assert [r["state"] for r in d.log_rows(rid)] == ["INTERRUPTED", "COMPLETE"]
        lines = [ln[1:3] for ln in ledger_lines(ledger)]
        # when try 2 started, nothing of try 1 was alive; a polite try 1 saw SIGTERM first
        want = [["1", "start"], ["1", "pid"], *([["1", "term"]] if mode == "polite" else [])]
        assert lines == [*want, ["2", "start"]]
        assert not any(alive(p) for p in pids[:2])
        assert not Path(output).exists()
        assert not [f for f in os.listdir(Path(output).parent) if f.startswith("spind-output-")]
        log = d.log()
        for pid in pids[:2]:
            line = next(ln for ln in log.splitlines() if f"process {pid} of try 1 " in ln)
            assert f"req={rid}" in line and "action=orphan_stop" in line
        assert ("did not stop within" in log) is (mode == "stubborn")

        # the other daemon's job was left alone
        assert all(alive(p) for p in pids[2:])
        assert other.terminate() == 0
    finally:
        _clean_up([d, other], pids)


def test_refuses_to_start_without_its_tmp_dir(tmp_path: Path) -> None:
    d = Daemon(tmp_path, _specs())
    d.journal.parent.mkdir(parents=True)
    d.journal.with_name("spind.db.tmp").write_text("a file where the directory should be")
    try:
        d.start(wait=False)
        assert d.wait_exit() == 2
        assert "spind.db.tmp exists and is not a directory" in d.log()
    finally:
        d.close()


def test_the_harness_leaves_no_job_of_a_killed_daemon(tmp_path: Path) -> None:
    """`Daemon.close()` kills the daemon and then its jobs' process groups (and only those):
    a test that ends while a job sleeps must not leave it running after the test."""
    d = Daemon(tmp_path / "main", _specs())
    other = Daemon(tmp_path / "other", _specs())
    ledger, other_ledger = tmp_path / "ledger", tmp_path / "other-ledger"
    pids: list[int] = []
    try:
        d.start()
        other.start()
        d.start_request("orphan", ledger=str(ledger), mode="stubborn")
        other.start_request("orphan", ledger=str(other_ledger), mode="stubborn")
        pids = eventually(lambda: first_try(ledger)[0])
        other_pids = eventually(lambda: first_try(other_ledger)[0])
        pids += other_pids
        d.close()
        # SIGKILL reaches the stubborn shell and its `sleep 600`; the other journal's stay
        eventually(lambda: not any(alive(p) for p in pids[:2]))
        assert all(alive(p) for p in other_pids)
        assert d.kill_jobs() == []
        assert other.terminate() == 0
    finally:
        _clean_up([d, other], pids)
