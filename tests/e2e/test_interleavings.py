"""The nasty interleavings: stop, suspend and shutdown against retry waits and sequence retries;
timeouts; failFast."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, eventually, ledger_lines

pytestmark = pytest.mark.timeout(120)

LOG = 'echo "$SPIND_JOB_ID $SPIND_TRY start" >> "$SPIND_ARG_ledger"'
COUNT = 'n=$(grep -c "^$SPIND_JOB_ID " "$SPIND_ARG_ledger")'

SPECS = {
    "x.yaml": f"""
sequences:
  seq-wait:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      body:
        category: sequence
        type: fails-once
        args: [ledger]
        retry: 1
        retryWait: 60s
  fails-once:
    args:
      required: [{{name: ledger}}]
    nodes:
      step:
        category: job
        type: shell
        with: {{cmd: '{LOG}; {COUNT}; [ "$n" -gt 1 ]'}}
        args: [ledger]
  seq-sibling:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      body:
        category: sequence
        type: two-branches
        args: [ledger]
        retry: 1
        retryWait: 100ms
  two-branches:
    args:
      required: [{{name: ledger}}]
    nodes:
      slow:
        category: job
        type: shell
        with: {{cmd: '{LOG}; {COUNT}; if [ "$n" -eq 1 ]; then sleep 30; fi'}}
        args: [ledger]
      quick-fail:
        category: job
        type: shell
        with: {{cmd: '{LOG}; sleep 0.3; {COUNT}; [ "$n" -gt 1 ]'}}
        args: [ledger]
  retry-wait:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      flaky:
        category: job
        type: shell
        with: {{cmd: '{LOG}; {COUNT}; [ "$n" -gt 1 ]'}}
        args: [ledger]
        retry: 1
        retryWait: 3s
  timeouts:
    request: true
    timeout: 1s
    args:
      required: [{{name: ledger}}]
    nodes:
      forever:
        category: job
        type: shell
        with: {{cmd: '{LOG}; sleep 30'}}
        args: [ledger]
  job-timeout:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      slowpoke:
        category: job
        type: shell
        with: {{cmd: '{LOG}; sleep 30'}}
        args: [ledger]
        timeout: 300ms
        retry: 1
  fail-fast:
    request: true
    failFast: true
    args:
      required: [{{name: ledger}}]
    nodes:
      bad:
        category: job
        type: shell
        with: {{cmd: '{LOG}; exit 1'}}
        args: [ledger]
      slow-first:
        category: job
        type: shell
        with: {{cmd: '{LOG}; sleep 0.5'}}
        args: [ledger]
      never:
        category: job
        type: shell
        with: {{cmd: '{LOG}'}}
        args: [ledger]
        deps: [slow-first]
""",
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "spind.yaml").write_text("shutdown_grace: 100ms\njob_stop_grace: 1s\n")
    d = Daemon(tmp_path, SPECS, env={"SPIND_CONFIG": str(tmp_path / "spind.yaml")}).start()
    yield d
    d.close()


def states(d: Daemon, rid: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in sorted(d.log_rows(rid), key=lambda r: (r["name"], r["try"])):
        out.setdefault(r["name"], []).append(r["state"])
    return out


def test_stop_during_sequence_retry_wait(daemon: Daemon, tmp_path: Path) -> None:
    rid = daemon.start_request("seq-wait", ledger=str(tmp_path / "l"))
    eventually(lambda: states(daemon, rid).get("step") == ["FAIL"])
    time.sleep(0.2)
    t0 = time.monotonic()
    status, body = daemon.put(rid, "stop")
    assert status == 200 and body["state"] == "STOPPED", body
    assert time.monotonic() - t0 < 5  # the 60 s sequence-retry wait ended at once


def test_shutdown_during_sequence_retry_wait_resumes(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    rid = daemon.start_request("seq-wait", ledger=str(ledger))
    eventually(lambda: states(daemon, rid).get("step") == ["FAIL"])
    time.sleep(0.2)
    assert daemon.terminate() == 0
    daemon.start()
    req = daemon.wait_state(rid)
    assert req["state"] == "COMPLETE"
    assert states(daemon, rid) == {"step": ["FAIL", "COMPLETE"]}


def test_sequence_retry_stops_running_sibling(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    rid = daemon.start_request("seq-sibling", ledger=str(ledger))
    req = daemon.wait_state(rid, timeout=30)
    assert req["state"] == "COMPLETE", req
    got = states(daemon, rid)
    # the sibling's first try was stopped by the copy's restart, not failed
    assert got == {"quick-fail": ["FAIL", "COMPLETE"], "slow": ["STOPPED", "COMPLETE"]}


def test_suspend_during_retry_wait_keeps_the_budget(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    rid = daemon.start_request("retry-wait", ledger=str(ledger))
    eventually(lambda: states(daemon, rid).get("flaky") == ["FAIL"])
    status, body = daemon.put(rid, "suspend")
    assert status == 200 and body["state"] == "SUSPENDED", body
    status, body = daemon.put(rid, "resume")
    assert status == 200, body
    req = daemon.wait_state(rid)
    assert req["state"] == "COMPLETE"  # the one retry was still there after the suspend
    assert states(daemon, rid) == {"flaky": ["FAIL", "COMPLETE"]}


def test_request_timeout_fails_the_request(daemon: Daemon, tmp_path: Path) -> None:
    rid = daemon.start_request("timeouts", ledger=str(tmp_path / "l"))
    req = daemon.wait_state(rid, timeout=20)
    assert req["state"] == "FAIL" and "timed out" in req["reason"]
    assert states(daemon, rid) == {"forever": ["STOPPED"]}


def test_job_timeout_is_a_failed_try(daemon: Daemon, tmp_path: Path) -> None:
    rid = daemon.start_request("job-timeout", ledger=str(tmp_path / "l"))
    req = daemon.wait_state(rid, timeout=20)
    assert req["state"] == "FAIL"
    rows = daemon.log_rows(rid)
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    assert all("timed out" in r["error"] for r in rows)


def test_fail_fast_starts_nothing_new(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    rid = daemon.start_request("fail-fast", ledger=str(ledger))
    req = daemon.wait_state(rid)
    assert req["state"] == "FAIL"
    jobs = {j["name"]: j["state"] for j in req["jobs"]}
    assert jobs == {"bad": "FAIL", "slow-first": "COMPLETE", "never": "PENDING"}
    assert len(ledger_lines(ledger)) == 2
