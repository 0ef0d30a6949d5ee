"""The runtime through a real daemon process: chains, retries, stop, suspend, crash, resume.

Every job is a real shell job that appends one ledger line per try (`JOB TRY start`), so the
tests can compare what really ran with what the journal says.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Daemon, eventually, ledger_lines

pytestmark = pytest.mark.timeout(120)

LOG = 'echo "$SPIND_JOB_ID $SPIND_TRY start" >> "$SPIND_ARG_ledger"'


def shell(cmd: str, *, args: str = "[ledger]", extra: str = "") -> str:
    return (
        "category: job\n        type: shell\n"
        f"        with: {{cmd: '{LOG}; {cmd}'}}\n        args: {args}\n{extra}"
    )


NL = "\n"

LIST_HOSTS = shell(
    'printf "hosts=%s\\n" "$SPIND_ARG_hosts" >> "$SPIND_OUTPUT"',
    args="[ledger, hosts]",
    extra="        sets: [{arg: hosts, as: hostList}]",
)

SPECS = {
    "line.yaml": f"""
sequences:
  line:
    request: true
    args:
      required: [{{name: ledger}}]
      optional: [{{name: pause, default: "0"}}]
    nodes:
      a:
        {shell('sleep "$SPIND_ARG_pause"', args="[ledger, pause]")}
      b:
        {shell('sleep "$SPIND_ARG_pause"', args="[ledger, pause]", extra="        deps: [a]")}
      c:
        {shell('sleep "$SPIND_ARG_pause"', args="[ledger, pause]", extra="        deps: [b]")}
""",
    "flaky.yaml": f"""
sequences:
  flaky:
    request: true
    args:
      required: [{{name: ledger}}, {{name: fails}}]
    nodes:
      try-hard:
        {
        shell(
            'n=$(grep -c "^$SPIND_JOB_ID " "$SPIND_ARG_ledger"); [ "$n" -gt "$SPIND_ARG_fails" ]',
            args="[ledger, fails]",
            extra="        retry: 3" + NL + "        retryWait: 100ms",
        )
    }
""",
    "seqretry.yaml": f"""
sequences:
  seqretry:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      prep:
        {shell("true")}
      body:
        category: sequence
        type: twostep
        args: [ledger]
        retry: 1
        retryWait: 100ms
        deps: [prep]
  twostep:
    args:
      required: [{{name: ledger}}]
    nodes:
      first:
        {shell("true")}
      second:
        {shell('[ $(grep -c " start" "$SPIND_ARG_ledger") -gt 3 ]', extra="        deps: [first]")}
""",
    "fanout.yaml": f"""
sequences:
  fanout:
    request: true
    args:
      required: [{{name: ledger}}, {{name: hosts}}]
    nodes:
      list:
        {LIST_HOSTS}
      each-host:
        category: sequence
        type: one-host
        each: ["hostList:host"]
        parallel: 2
        args: [ledger]
        deps: [list]
      join:
        {shell("true", extra="        deps: [each-host]")}
  one-host:
    args:
      required: [{{name: ledger}}, {{name: host}}]
    nodes:
      work:
        {
        shell(
            'echo "$SPIND_ARG_host" >> "$SPIND_ARG_ledger.hosts"; sleep 0.3', args="[ledger, host]"
        )
    }
""",
    "branches.yaml": f"""
sequences:
  branches:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      bad:
        {shell("exit 3")}
      after-bad:
        {shell("true", extra="        deps: [bad]")}
      good:
        {shell("sleep 0.3")}
""",
    "long.yaml": f"""
sequences:
  long:
    request: true
    args:
      required: [{{name: ledger}}]
      optional: [{{name: seconds, default: "30"}}]
    nodes:
      first:
        {shell("true")}
      wait:
        {
        shell(
            'sleep "$SPIND_ARG_seconds"',
            args="[ledger, seconds]",
            extra="        deps: [first]" + NL + "        retry: 1",
        )
    }
      last:
        {shell("true", extra="        deps: [wait]")}
  waiting:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      fail-then-wait:
        {shell("exit 1", extra="        retry: 5" + NL + "        retryWait: 60s")}
  held:
    request: true
    args:
      required: [{{name: ledger}}]
    nodes:
      careful:
        {shell("sleep 30", extra="        onInterrupt: hold")}
""",
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, SPECS)
    d.start()
    yield d
    d.close()


def tries_by_job(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: (r["jobId"], r["try"])):
        out.setdefault(r["jobId"], []).append(r["state"])
    return out


def check_ledger_matches_journal(d: Daemon, rid: str, ledger: Path) -> None:
    """Every try that ran is in the journal's log once; a logged try that never ran was
    interrupted; no job completed twice."""
    rows = d.log_rows(rid)
    ran = Counter((job, int(t)) for job, t, _ in ledger_lines(ledger))
    assert all(n == 1 for n in ran.values()), f"a try ran twice: {ran}"
    logged = {(r["jobId"], r["try"]): r["state"] for r in rows}
    for key in ran:
        assert key in logged, f"try {key} ran but is not in the journal"
    for key, state in logged.items():
        if key not in ran:
            assert state == "INTERRUPTED", f"try {key} is {state} but never ran"
    completes = Counter(r["jobId"] for r in rows if r["state"] == "COMPLETE")
    assert all(n == 1 for n in completes.values()), completes
    assert all(r["state"] != "RUNNING" for r in rows)


def test_linear_chain_completes_in_order(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("line", ledger=str(ledger))
    req = daemon.wait_state(rid)
    assert req["state"] == "COMPLETE", req
    assert req["finishedJobs"] == req["totalJobs"] == 3
    order = [job for job, _t, _ in ledger_lines(ledger)]
    names = {j["id"]: j["name"] for j in req["jobs"]}
    assert [names[j] for j in order] == ["a", "b", "c"]
    check_ledger_matches_journal(daemon, rid, ledger)


@pytest.mark.parametrize(
    ("fails", "state", "tries"),
    [("0", "COMPLETE", 1), ("2", "COMPLETE", 3), ("5", "FAIL", 4)],
)
def test_job_retry(daemon: Daemon, tmp_path: Path, fails: str, state: str, tries: int) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("flaky", ledger=str(ledger), fails=fails)
    req = daemon.wait_state(rid)
    assert req["state"] == state
    rows = daemon.log_rows(rid)
    assert len(rows) == tries
    assert [r["try"] for r in sorted(rows, key=lambda r: r["try"])] == list(range(1, tries + 1))
    assert req["jobs"][0]["tries"] == tries


def test_sequence_retry_reruns_the_copy(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("seqretry", ledger=str(ledger))
    req = daemon.wait_state(rid)
    assert req["state"] == "COMPLETE", req
    names = {j["id"]: j["name"] for j in req["jobs"]}
    ran = Counter(names[job] for job, _t, _ in ledger_lines(ledger))
    # prep once; first and second twice (second fails the first time: 3 starts before it)
    assert ran == {"prep": 1, "first": 2, "second": 2}
    by_job = tries_by_job(daemon.log_rows(rid))
    second = next(j for j, n in names.items() if n == "second")
    assert by_job[second] == ["FAIL", "COMPLETE"]


def test_deferred_each_with_parallel_window(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    hosts = ["h1", "h2", "h3", "h4", "h5"]
    rid = daemon.start_request("fanout", ledger=str(ledger), hosts=str(hosts).replace("'", '"'))
    req = daemon.wait_state(rid)
    assert req["state"] == "COMPLETE", req
    work = [j for j in req["jobs"] if j["name"] == "work"]
    assert len(work) == 5
    assert sorted(Path(f"{ledger}.hosts").read_text().split()) == hosts
    # never more than 2 copies at once: compare the journal's try windows
    rows = [r for r in daemon.log_rows(rid) if r["name"] == "work"]
    spans = sorted((r["startedAt"], r["finishedAt"]) for r in rows)
    for i, (start, _end) in enumerate(spans):
        overlapping = sum(1 for s, e in spans[:i] if e > start)
        assert overlapping <= 1, spans
    join = next(j for j in req["jobs"] if j["name"] == "join")
    assert join["state"] == "COMPLETE"


def test_failure_stops_downstream_only(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("branches", ledger=str(ledger))
    req = daemon.wait_state(rid)
    assert req["state"] == "FAIL"
    states = {j["name"]: j["state"] for j in req["jobs"]}
    assert states == {"bad": "FAIL", "after-bad": "PENDING", "good": "COMPLETE"}
    assert "bad" in req["reason"]
    rows = daemon.log_rows(rid)
    bad = next(r for r in rows if r["name"] == "bad")
    assert bad["exit"] == 3


def test_stop_during_a_long_job(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("long", ledger=str(ledger))
    eventually(lambda: len(ledger_lines(ledger)) == 2)
    t0 = time.monotonic()
    status, body = daemon.put(rid, "stop")
    assert status == 200, body
    assert body["state"] == "STOPPED"
    assert time.monotonic() - t0 < 10
    status, body = daemon.put(rid, "stop")
    assert status == 409 and "error" in body
    states = {j["name"]: j["state"] for j in daemon.request(rid)["jobs"]}
    assert states == {"first": "COMPLETE", "wait": "STOPPED", "last": "PENDING"}


def test_stop_during_retry_wait_ends_at_once(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("waiting", ledger=str(ledger))
    eventually(lambda: daemon.log_rows(rid) and daemon.log_rows(rid)[0]["state"] == "FAIL")
    t0 = time.monotonic()
    status, body = daemon.put(rid, "stop")
    assert status == 200 and body["state"] == "STOPPED"
    assert time.monotonic() - t0 < 5  # the 60 s retry wait did not hold it


def test_suspend_resume_and_interrupted_try_not_counted(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("long", ledger=str(ledger), seconds="1")
    eventually(lambda: len(ledger_lines(ledger)) == 2)
    status, body = daemon.put(rid, "suspend")
    assert status == 200 and body["state"] == "SUSPENDED", body
    assert daemon.put(rid, "suspend")[0] == 409
    status, body = daemon.put(rid, "resume")
    assert status == 200, body
    req = daemon.wait_state(rid)
    assert req["state"] == "COMPLETE"
    wait = next(j for j in req["jobs"] if j["name"] == "wait")
    by_job = tries_by_job(daemon.log_rows(rid))
    assert by_job[wait["id"]] == ["INTERRUPTED", "COMPLETE"]
    check_ledger_matches_journal(daemon, rid, ledger)


def test_sigterm_suspends_and_restart_resumes(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS, env={"SPIND_CONFIG": ""})
    (tmp_path / "spind.yaml").write_text("shutdown_grace: 200ms\n")
    d.start()
    try:
        ledger = tmp_path / "ledger"
        rid = d.start_request("long", ledger=str(ledger), seconds="2")
        eventually(lambda: len(ledger_lines(ledger)) == 2)
        assert d.terminate() == 0
        with d.db() as db:
            (state,) = db.execute("SELECT state FROM requests WHERE id=?", (rid,)).fetchone()
        assert state == "SUSPENDED"
        d.start()
        req = d.wait_state(rid)
        assert req["state"] == "COMPLETE"
        wait = next(j for j in req["jobs"] if j["name"] == "wait")
        # the interrupted try did not use up the job's single retry
        assert tries_by_job(d.log_rows(rid))[wait["id"]] == ["INTERRUPTED", "COMPLETE"]
        check_ledger_matches_journal(d, rid, ledger)
    finally:
        d.close()


def test_kill9_resumes_without_rerunning_completed_jobs(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS).start()
    try:
        ledger = tmp_path / "ledger"
        rid = d.start_request("line", ledger=str(ledger), pause="0.4")
        eventually(lambda: len(ledger_lines(ledger)) >= 2)
        d.kill9()
        d.start()
        req = d.wait_state(rid)
        assert req["state"] == "COMPLETE", req
        check_ledger_matches_journal(d, rid, ledger)
        with d.db() as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        d.close()


def test_hold_after_crash_then_retry(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS).start()
    try:
        ledger = tmp_path / "ledger"
        rid = d.start_request("held", ledger=str(ledger))
        eventually(lambda: len(ledger_lines(ledger)) == 1)
        d.kill9()
        d.start()
        req = d.wait_state(rid, "SUSPENDED")
        assert req["reason"].startswith("held:")
        status, body = d.put(rid, "resume")
        assert status == 409 and "held" in body["error"]
        job = req["jobs"][0]["id"]
        status, body = d.call(
            "PUT", f"/api/v1/requests/{rid}/jobs/{job}/skip", {"reason": "checked by hand"}
        )
        assert status == 200, body
        req = d.wait_state(rid)
        assert req["state"] == "COMPLETE"
        assert req["jobs"][0]["state"] == "SKIPPED"
    finally:
        d.close()


def test_retry_a_failed_request(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("flaky", ledger=str(ledger), fails="5")
    assert daemon.wait_state(rid)["state"] == "FAIL"
    status, body = daemon.put(rid, "retry")
    assert status == 200, body
    req = daemon.wait_state(rid)
    # 4 tries failed, then fresh tries: the 6th succeeds (5 failures were required)
    assert req["state"] == "COMPLETE"
    assert len(daemon.log_rows(rid)) == 6


def test_events_stream_in_order(daemon: Daemon, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("line", ledger=str(ledger))
    daemon.wait_state(rid)
    conn_status, text = daemon.call("GET", f"/api/v1/requests/{rid}/events")
    assert conn_status == 200
    assert isinstance(text, str)
    seqs = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert seqs == sorted(seqs) and len(seqs) >= 8
    assert "COMPLETE" in text.split("event: end")[0].splitlines()[-3] or "event: end" in text


def test_sighup_with_broken_spec_keeps_old_specs(daemon: Daemon, tmp_path: Path) -> None:
    (daemon.specs_dir / "broken.yaml").write_text(
        "sequences:\n  x:\n    nodes: {a: {category: nope}}\n"
    )
    daemon.signal(signal.SIGHUP)
    eventually(lambda: daemon.call("GET", "/api/v1/health")[1].get("specsOk") is False)
    status, types = daemon.call("GET", "/api/v1/request-list")
    assert status == 200 and "line" in [t["name"] for t in types]
    ledger = tmp_path / "ledger"
    rid = daemon.start_request("line", ledger=str(ledger))
    assert daemon.wait_state(rid)["state"] == "COMPLETE"
