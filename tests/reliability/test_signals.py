"""Signals and racing control calls against a real daemon.

SIGTERM at random moments (seeded), a second SIGTERM that cuts the grace short or lands while
the daemon exits, SIGHUP storms while chains run, and stop/suspend/resume/retry calls fired
from threads at random moments while jobs end, retry waits run out and sequences restart.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.bench import crash_campaign
from tests.e2e.harness import Daemon, eventually, ledger_lines
from tests.reliability import mix
from tests.reliability.conftest import Spawn

pytestmark = pytest.mark.timeout(170)

GRACE = "shutdown_grace: 400ms\njob_stop_grace: 1s\n"


def _quiet(_text: str) -> None:
    pass


def test_sigterm_at_random_moments(tmp_path: Path) -> None:
    """Seeded SIGTERMs: exit 0 each time, everything unfinished SUSPENDED, nothing RUNNING,
    and after the last restart every request ends as designed (an interrupted try costs no
    retry: `slow` has none to spare, `flaky*` exactly as many as it needs)."""
    camp, report = crash_campaign.run(5, 21, tmp_path, mode="term", log=_quiet)
    assert report.violations == []
    assert camp.kills["term"] == 5 - camp.kills["during start"]


def test_interrupted_try_is_logged_and_costs_no_retry(spawn: Spawn, tmp_path: Path) -> None:
    d = spawn(config=GRACE)
    ledger = tmp_path / "ledger"
    args = {"ledger": str(ledger), "secs": "3", "pause": "0"}
    rid = mix.submit(d, {"type": "slow", "args": args})
    eventually(lambda: len(ledger_lines(ledger)) == 2)  # `long` (retry 0) is running
    assert d.terminate() == 0
    with d.db() as db:
        assert db.execute("SELECT state FROM requests").fetchone()[0] == "SUSPENDED"
        rows = db.execute("SELECT try, state FROM job_log WHERE state != 'COMPLETE'").fetchall()
    assert [tuple(r) for r in rows] == [(1, "INTERRUPTED")]
    d.start()
    req = d.wait_state(rid)
    assert req["state"] == "COMPLETE"
    long_id = next(j["id"] for j in req["jobs"] if j["name"] == "long")
    tries = [r["state"] for r in sorted(d.log_rows(rid), key=lambda r: r["try"])]
    long_tries = [r["state"] for r in d.log_rows(rid) if r["jobId"] == long_id]
    assert long_tries == ["INTERRUPTED", "COMPLETE"], tries
    assert mix.check(d.journal, ledger).violations == []


def test_second_sigterm_cuts_the_grace_short(spawn: Spawn, tmp_path: Path) -> None:
    d = spawn(config="shutdown_grace: 60s\njob_stop_grace: 1s\n")
    ledger = tmp_path / "ledger"
    rid = mix.submit(d, {"type": "slow", "args": {"ledger": str(ledger), "secs": "120"}})
    eventually(lambda: len(ledger_lines(ledger)) == 2)
    d.signal(signal.SIGTERM)
    time.sleep(1.0)
    assert d.proc is not None and d.proc.poll() is None, "exited before the grace ran out"
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    assert time.monotonic() - t0 < 10
    with d.db() as db:
        assert db.execute("SELECT state FROM requests").fetchone()[0] == "SUSPENDED"
        running = db.execute("SELECT count(*) FROM job_log WHERE state = 'RUNNING'").fetchone()
        assert running[0] == 0
        assert db.execute("SELECT count(*) FROM jobs WHERE state='RUNNING'").fetchone()[0] == 0
        last = db.execute("SELECT state FROM job_log ORDER BY started_at DESC").fetchone()[0]
        assert last == "INTERRUPTED"
    d.start()  # resumed: the long job runs again as try 2, then we stop it
    eventually(lambda: len(ledger_lines(ledger)) == 3)
    status, body = d.put(rid, "stop")
    assert status == 200 and body["state"] == "STOPPED", body
    assert mix.check(d.journal, ledger, expected={}).violations == []


def test_sigterms_while_the_daemon_exits_still_exit_0(spawn: Spawn) -> None:
    """SIGTERMs every half millisecond from the first one until the process is gone: the ones
    that land while the daemon winds down (its event loop closing, the interpreter exiting)
    must not kill it by signal."""
    d = spawn(config=GRACE, start=False)
    codes = []
    for _ in range(8):
        d.start()
        assert d.proc is not None
        while d.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(d.proc.pid, signal.SIGTERM)
            time.sleep(0.0005)
        codes.append(d.proc.returncode)
    assert codes == [0] * 8


def test_a_sighup_burst_is_one_reload_not_one_per_signal(spawn: Spawn) -> None:
    """Reloads run in the event loop: queued SIGHUPs are coalesced, so that a burst does not
    hold the loop (API, chains, watchdog) for one reload per signal."""
    d = spawn()
    for _ in range(100):
        d.signal(signal.SIGHUP)
    assert d.call("GET", "/api/v1/version")[0] == 200
    time.sleep(0.5)
    assert d.call("GET", "/api/v1/version")[0] == 200
    reloads = d.log().count("reloading config and specs")
    assert 1 <= reloads <= 5, reloads


# ---- control calls racing with the chains


def _consistent(journal: Path) -> list[str]:
    """One read snapshot: a RUNNING job belongs to a RUNNING request and has exactly one
    RUNNING log row (its current try); a RUNNING log row belongs to a RUNNING job."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        db.execute("BEGIN")
        bad = [
            f"job {tuple(r)} RUNNING in a request that is {r[2]}"
            for r in db.execute(
                "SELECT j.request_id, j.job_id, r.state FROM jobs j JOIN requests r "
                "ON r.id = j.request_id WHERE j.state = 'RUNNING' AND r.state != 'RUNNING'"
            )
        ]
        bad += [
            f"job {tuple(r)} RUNNING without a RUNNING try"
            for r in db.execute(
                "SELECT request_id, job_id FROM jobs j WHERE state = 'RUNNING' AND NOT EXISTS "
                "(SELECT 1 FROM job_log l WHERE l.request_id = j.request_id AND "
                "l.job_id = j.job_id AND l.try = j.tries AND l.state = 'RUNNING')"
            )
        ]
        bad += [
            f"try {tuple(r)} RUNNING but its job is not"
            for r in db.execute(
                "SELECT l.request_id, l.job_id, l.try FROM job_log l JOIN jobs j ON "
                "j.request_id = l.request_id AND j.job_id = l.job_id "
                "WHERE l.state = 'RUNNING' AND (j.state != 'RUNNING' OR j.tries != l.try)"
            )
        ]
        db.execute("COMMIT")
        return bad
    finally:
        db.close()


def _storm(d: Daemon, rids: list[str], seconds: float, seed: int) -> Counter[tuple[str, int]]:
    statuses: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        while time.monotonic() < end:
            rid = rng.choice(rids)
            action = rng.choice(("stop", "suspend", "resume", "retry", "retry", "resume"))
            try:
                status, body = d.put(rid, action)
            except OSError as exc:
                with lock:
                    errors.append(f"{action} {rid}: {exc!r}")
                continue
            with lock:
                statuses[(action, status)] += 1
                if status >= 500 or not isinstance(body, dict):
                    errors.append(f"{action} {rid}: {status} {body}")
                elif status != 200 and not body.get("error"):
                    errors.append(f"{action} {rid}: {status} without an error message")
            time.sleep(rng.uniform(0.0, 0.08))

    def watch() -> None:
        while time.monotonic() < end:
            found = _consistent(d.journal)
            if found:
                with lock:
                    errors.extend(found)
            time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=watch))
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    assert errors == []
    return statuses


def _settle(d: Daemon, rids: list[str]) -> None:
    """Resume what is suspended, retry what was stopped, until everything has ended."""
    for _ in range(6):
        pending = False
        for rid in rids:
            state = d.wait_state(rid, *mix.FINAL, "SUSPENDED", timeout=60)["state"]
            action = {"SUSPENDED": "resume", "STOPPED": "retry"}.get(state)
            if action:
                pending = True
                status, body = d.put(rid, action)
                assert status == 200, (action, status, body)
        if not pending:
            return
    raise AssertionError("requests still stopped or suspended after 6 rounds")


@pytest.mark.parametrize("seed", [1, 2])
def test_control_calls_race_with_chains(spawn: Spawn, tmp_path: Path, seed: int) -> None:
    d = spawn()
    ledger = tmp_path / "ledger"
    rng = random.Random(seed)
    bodies = [mix.random_request(rng, ledger, slow=True) for _ in range(10)]
    for body in bodies:
        body["args"]["pause"] = "0.2"
    rids = [mix.submit(d, body) for body in bodies]
    statuses = _storm(d, rids, 8.0, seed)
    assert statuses, "no call was made"
    assert {s for (_a, s) in statuses} <= {200, 409}, statuses
    assert any(s == 200 for (a, s) in statuses if a != "resume"), statuses
    _settle(d, rids)
    assert _consistent(d.journal) == []
    assert d.terminate() == 0
    report = mix.check(d.journal, ledger)
    assert report.violations == []


SEQ_IN_GRACE = f"""
sequences:
  seq-in-grace:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      body:
        category: sequence
        type: fail-once
        args: [ledger]
        retry: 1
        retryWait: 10ms
  fail-once:
    args:
      required: [{{name: ledger}}]
      optional: [{{name: pause, default: "1"}}]
    nodes:
      second:
        category: job
        type: shell
        args: [ledger, pause]
        with:
          cmd: '{mix.START}; {mix.fail_until("1")}'
"""


def test_a_sequence_failing_during_the_grace_is_retried_after_restart(
    spawn: Spawn, tmp_path: Path
) -> None:
    """The job of a sequence with `retry: 1` fails on its own while the daemon waits out its
    shutdown grace: the sequence retry is owed, and runs after the restart (it used to be
    dropped, so the request ended FAIL)."""
    d = spawn({"s.yaml": SEQ_IN_GRACE}, config="shutdown_grace: 20s\n")
    ledger = tmp_path / "ledger"
    rid = mix.submit(d, {"type": "seq-in-grace", "args": {"ledger": str(ledger)}})
    eventually(lambda: len(ledger_lines(ledger)) == 1)
    assert d.terminate() == 0  # the job fails about 1 s into the grace
    assert [line[3] for line in ledger_lines(ledger)] == ["start", "fail"]
    d.start()
    assert d.wait_state(rid)["state"] == "COMPLETE"
    expected = {"seq-in-grace": "COMPLETE"}
    assert mix.check(d.journal, ledger, expected=expected).violations == []
