"""A mix of request specs whose final state is known in advance, and the ledger/journal checks.

Every job is a shell job that first appends `REQUEST JOB TRY start` to a ledger file (given as
the `ledger` arg); jobs that fail on purpose append `REQUEST JOB TRY fail` just before they exit
1, so that a job can count its own earlier *failed* tries. Each spec is designed so that its
final state does not depend on where a crash, a SIGTERM or a suspend lands:

- `line`      a -> b -> c                                             COMPLETE
- `fan`       list (sets a list at run time) -> deferred `each` over it, parallel 2, of a
              two-job sequence -> join                                COMPLETE
- `fanstatic` `each` over a request arg (built at create time) -> join COMPLETE
- `cond`      pick (sets `mode` at run time) -> deferred conditional -> after  COMPLETE
- `flaky`     fails until it has written `fails` fail lines; retry = fails      COMPLETE
              (an interrupted try that consumed a retry would make it FAIL)
- `doomed`    bad (always exit 3, retry 2) -> after-bad; good             FAIL
- `seqretry`  prep -> sequence (first -> second), second fails once; sequence retry 1  COMPLETE
- `slow`      one long job with retry 0: only ends COMPLETE if interruptions cost nothing

`check()` compares the ledger with the journal file (read directly with sqlite3) and returns
every violation found, as text.
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness import Daemon

START = 'echo "$SPIND_REQUEST_ID $SPIND_JOB_ID $SPIND_TRY start" >> "$SPIND_ARG_ledger"'
FAIL_LINE = 'echo "$SPIND_REQUEST_ID $SPIND_JOB_ID $SPIND_TRY fail" >> "$SPIND_ARG_ledger"'
COUNT_FAILS = 'n=$(grep -c "^$SPIND_REQUEST_ID $SPIND_JOB_ID [0-9]* fail$" "$SPIND_ARG_ledger")'
PAUSE = 'sleep "$SPIND_ARG_pause"'
FINAL = ("COMPLETE", "FAIL", "STOPPED")
UNFINISHED = ("PENDING", "RUNNING", "SUSPENDED")


def job(cmd: str, args: tuple[str, ...] = ("ledger", "pause"), **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "category": "job",
        "type": "shell",
        "args": list(args),
        "with": {"cmd": f"{START}; {cmd}"},
    }
    node.update(extra)
    return node


def fail_until(count: str) -> str:
    """Shell: fail (writing a fail line) while this job has fewer than `count` fail lines."""
    return f'{PAUSE}; {COUNT_FAILS}; if [ "$n" -lt {count} ]; then {FAIL_LINE}; exit 1; fi'


LEDGER_ARGS = {"required": [{"name": "ledger"}], "optional": [{"name": "pause", "default": "0.1"}]}

_LIST = (
    'l=""; i=1; while [ "$i" -le "$SPIND_ARG_n" ]; do l="$l${l:+,}\\"h$i\\""; i=$((i+1)); done; '
    'echo "hosts=[$l]" >> "$SPIND_OUTPUT"'
)

SEQUENCES: dict[str, dict[str, Any]] = {
    "line": {
        "request": True,
        "args": LEDGER_ARGS,
        "nodes": {
            "a": job(PAUSE),
            "b": job(PAUSE, deps=["a"]),
            "c": job(PAUSE, deps=["b"]),
        },
    },
    "fan": {
        "request": True,
        "args": {**LEDGER_ARGS, "required": [{"name": "ledger"}, {"name": "n"}]},
        "nodes": {
            "list": job(_LIST, ("ledger", "n"), sets=[{"arg": "hosts", "as": "hostList"}]),
            "each-host": {
                "category": "sequence",
                "type": "one-host",
                "each": ["hostList:host"],
                "parallel": 2,
                "args": ["ledger", "pause"],
                "deps": ["list"],
            },
            "join": job(PAUSE, deps=["each-host"]),
        },
    },
    "one-host": {
        "args": {
            "required": [{"name": "ledger"}, {"name": "host"}],
            "optional": [{"name": "pause", "default": "0.1"}],
        },
        "nodes": {
            "w1": job(PAUSE, ("ledger", "pause", "host")),
            "w2": job(PAUSE, ("ledger", "pause", "host"), deps=["w1"]),
        },
    },
    "fanstatic": {
        "request": True,
        "args": {**LEDGER_ARGS, "required": [{"name": "ledger"}, {"name": "hosts"}]},
        "nodes": {
            "each-job": {**job(PAUSE), "each": ["hosts:host"]},
            "join": job(PAUSE, deps=["each-job"]),
        },
    },
    "cond": {
        "request": True,
        "args": {**LEDGER_ARGS, "required": [{"name": "ledger"}, {"name": "choice"}]},
        "nodes": {
            "pick": job(
                'echo "mode=$SPIND_ARG_choice" >> "$SPIND_OUTPUT"',
                ("ledger", "choice"),
                sets=["mode"],
            ),
            "branch": {
                "category": "conditional",
                "if": "mode",
                "eq": {"a": "branch-a", "b": "branch-b", "default": "noop"},
                "args": ["ledger", "pause"],
                "deps": ["pick"],
            },
            "after": job(PAUSE, deps=["branch"]),
        },
    },
    "branch-a": {
        "args": LEDGER_ARGS,
        "nodes": {"x1": job(PAUSE), "x2": job(PAUSE, deps=["x1"])},
    },
    "branch-b": {"args": LEDGER_ARGS, "nodes": {"y1": job(PAUSE)}},
    "flaky": {
        "request": True,
        "args": {**LEDGER_ARGS, "required": [{"name": "ledger"}, {"name": "fails"}]},
        "nodes": {
            "try-hard": job(
                fail_until('"$SPIND_ARG_fails"'),
                ("ledger", "pause", "fails"),
                retry="{fails}",  # replaced per request below: retry must be a number
                retryWait="100ms",
            ),
        },
    },
    "doomed": {
        "request": True,
        "args": LEDGER_ARGS,
        "nodes": {
            "bad": job(f"{PAUSE}; exit 3", retry=2, retryWait="50ms"),
            "after-bad": job(PAUSE, deps=["bad"]),
            "good": job(PAUSE),
        },
    },
    "seqretry": {
        "request": True,
        "args": LEDGER_ARGS,
        "nodes": {
            "prep": job(PAUSE),
            "body": {
                "category": "sequence",
                "type": "twostep",
                "args": ["ledger", "pause"],
                "retry": 1,
                "retryWait": "100ms",
                "deps": ["prep"],
            },
        },
    },
    "twostep": {
        "args": LEDGER_ARGS,
        "nodes": {"first": job(PAUSE), "second": job(fail_until("1"), deps=["first"])},
    },
    "slow": {
        "request": True,
        "args": {**LEDGER_ARGS, "required": [{"name": "ledger"}, {"name": "secs"}]},
        "nodes": {
            "first": job(PAUSE),
            "long": job('sleep "$SPIND_ARG_secs"', ("ledger", "secs"), deps=["first"]),
        },
    },
}

#: flaky specs, one per number of failures before success (retry must be a literal number)
FLAKY_FAILS = (1, 2, 3)

EXPECTED: dict[str, str] = {
    "line": "COMPLETE",
    "fan": "COMPLETE",
    "fanstatic": "COMPLETE",
    "cond": "COMPLETE",
    "doomed": "FAIL",
    "seqretry": "COMPLETE",
    "slow": "COMPLETE",
    **{f"flaky{k}": "COMPLETE" for k in FLAKY_FAILS},
}


def specs() -> dict[str, str]:
    """Spec files (name -> YAML text) for every type of the mix."""
    seqs = {k: v for k, v in SEQUENCES.items() if k != "flaky"}
    for k in FLAKY_FAILS:
        flaky = yaml.safe_load(yaml.safe_dump(SEQUENCES["flaky"]))
        flaky["nodes"]["try-hard"]["retry"] = k
        seqs[f"flaky{k}"] = flaky
    return {"mix.yaml": yaml.safe_dump({"sequences": seqs}, sort_keys=False)}


def random_request(rng: random.Random, ledger: Path, *, slow: bool = True) -> dict[str, Any]:
    """A request body of a random type of the mix."""
    kinds = sorted(EXPECTED) if slow else sorted(k for k in EXPECTED if k != "slow")
    kind = rng.choice(kinds)
    pause = f"{rng.choice((0, 0.05, 0.1, 0.2, 0.3)):g}"
    args: dict[str, Any] = {"ledger": str(ledger), "pause": pause}
    if kind == "fan":
        args["n"] = str(rng.randint(0, 5))
    elif kind == "fanstatic":
        args["hosts"] = [f"s{i}" for i in range(rng.randint(0, 4))]
    elif kind == "cond":
        args["choice"] = rng.choice(("a", "b", "c"))
    elif kind.startswith("flaky"):
        args["fails"] = kind.removeprefix("flaky")
    elif kind == "slow":
        args["secs"] = f"{rng.uniform(0.5, 2.0):.2f}"
    return {"type": kind, "args": args}


def submit(d: Daemon, body: dict[str, Any]) -> str:
    """POST a request; its id (a 201 is required)."""
    status, answer = d.call("POST", "/api/v1/requests", body)
    assert status == 201, (status, answer)
    return str(answer["id"])


# ---- checks


@dataclass
class Report:
    requests: int = 0
    jobs: int = 0
    tries: int = 0
    ledger_tries: int = 0
    interrupted: int = 0
    states: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.violations.append(text)


def read_ledger(path: Path) -> tuple[list[tuple[str, str, int]], set[tuple[str, str, int]]]:
    """(start lines in order, set of tries that wrote a fail line)."""
    starts: list[tuple[str, str, int]] = []
    fails: set[tuple[str, str, int]] = set()
    if not path.exists():
        return starts, fails
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        key = (parts[0], parts[1], int(parts[2]))
        (starts.append(key) if parts[3] == "start" else fails.add(key))
    return starts, fails


def _rows(db: sqlite3.Connection, sql: str) -> list[sqlite3.Row]:
    return list(db.execute(sql).fetchall())


def check(
    journal: Path,
    ledger: Path,
    *,
    expected: dict[str, str] | None = None,
    allow_unfinished: bool = False,
) -> Report:
    """Every invariant of the campaign, from the journal file and the ledger.

    `expected` maps request type -> final state (default EXPECTED; a type not in it is only
    checked for consistency). With `allow_unfinished`, requests may still be SUSPENDED or
    PENDING (a campaign step that stopped the daemon), never RUNNING.
    """
    expected = EXPECTED if expected is None else expected
    rep = Report()
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            rep.add(f"integrity_check: {ok}")
        reqs = {r["id"]: r for r in _rows(db, "SELECT id, type, state, reason FROM requests")}
        jobs = _rows(db, "SELECT request_id, job_id, name, state, tries, kind FROM jobs")
        log = _rows(
            db, "SELECT request_id, job_id, try, seq_try, state, error FROM job_log ORDER BY try"
        )
    finally:
        db.close()
    starts, fails = read_ledger(ledger)
    rep.requests, rep.jobs, rep.tries = len(reqs), len(jobs), len(log)
    rep.ledger_tries = len(starts)
    _check_requests(rep, reqs, expected, allow_unfinished)
    _check_ledger(rep, reqs, log, starts, fails)
    _check_jobs(rep, reqs, jobs, log)
    return rep


def _check_requests(
    rep: Report, reqs: dict[str, sqlite3.Row], expected: dict[str, str], allow_unfinished: bool
) -> None:
    for rid, r in reqs.items():
        rep.states[r["state"]] += 1
        if r["state"] == "RUNNING" or (r["state"] in UNFINISHED and not allow_unfinished):
            rep.add(f"request {rid} ({r['type']}) left {r['state']}: {r['reason']}")
            continue
        want = expected.get(r["type"])
        if want and r["state"] in FINAL and r["state"] != want:
            rep.add(f"request {rid} ({r['type']}) ended {r['state']} ({r['reason']}), want {want}")


def _check_ledger(
    rep: Report,
    reqs: dict[str, sqlite3.Row],
    log: list[sqlite3.Row],
    starts: list[tuple[str, str, int]],
    fails: set[tuple[str, str, int]],
) -> None:
    logged = {(r["request_id"], r["job_id"], r["try"]): r for r in log}
    for key, n in Counter(starts).items():
        if n > 1:
            rep.add(f"try {key} ran {n} times (one try number, several processes)")
        if key not in logged:
            rep.add(f"try {key} ran (ledger) but is not in the journal")
    ran = set(starts)
    for key, r in logged.items():
        if r["state"] == "INTERRUPTED":
            rep.interrupted += 1
        elif (
            r["state"] in ("COMPLETE", "FAIL")
            and key not in ran
            and not r["error"].startswith(("cannot make job", "expansion"))
        ):
            rep.add(f"try {key} is {r['state']} in the journal but never started")
        if r["state"] == "RUNNING":
            rep.add(f"try {key} left RUNNING in the journal")
        if r["state"] == "COMPLETE" and key in fails:
            rep.add(f"try {key} wrote a fail line and exited 1 but is COMPLETE in the journal")


def _check_jobs(
    rep: Report,
    reqs: dict[str, sqlite3.Row],
    jobs: list[sqlite3.Row],
    log: list[sqlite3.Row],
) -> None:
    by_job: dict[tuple[str, str], list[sqlite3.Row]] = defaultdict(list)
    for r in log:
        by_job[(r["request_id"], r["job_id"])].append(r)
    for j in jobs:
        key = (j["request_id"], j["job_id"])
        rows = by_job.get(key, [])
        req = reqs.get(j["request_id"])
        if req is None:
            continue
        if j["state"] == "RUNNING":
            rep.add(f"job {key} ({j['name']}) left RUNNING")
        if j["kind"] == "job" and j["tries"] != max((r["try"] for r in rows), default=0):
            rep.add(f"job {key} counts {j['tries']} tries but its log has {len(rows)} rows")
        if [r["try"] for r in rows] != list(range(1, len(rows) + 1)):
            rep.add(f"job {key} has try numbers {[r['try'] for r in rows]}")
        done_in: dict[int, int] = {}
        for r in rows:
            epoch = r["seq_try"]
            if epoch in done_in:
                rep.add(f"job {key} ran try {r['try']} after try {done_in[epoch]} completed")
            if r["state"] == "COMPLETE":
                done_in[epoch] = r["try"]
        if req["state"] == "COMPLETE" and j["state"] not in ("COMPLETE", "SKIPPED"):
            rep.add(f"request {key[0]} COMPLETE but job {key[1]} ({j['name']}) is {j['state']}")
        _check_shape(rep, req, j, rows)


def _check_shape(rep: Report, req: sqlite3.Row, j: sqlite3.Row, rows: list[sqlite3.Row]) -> None:
    """Per-type expectations: failures counted exactly, nothing after a failed dependency."""
    if req["state"] not in FINAL:
        return
    key = (j["request_id"], j["job_id"], j["name"])
    last = [r for r in rows if r["seq_try"] == max((x["seq_try"] for x in rows), default=1)]
    failed = sum(1 for r in last if r["state"] == "FAIL")
    typ, name = req["type"], j["name"]
    if typ == "doomed" and name == "bad" and (failed != 3 or j["state"] != "FAIL"):
        rep.add(f"{key}: {failed} failed tries, state {j['state']} (want 3 and FAIL)")
    if typ == "doomed" and name == "after-bad" and rows:
        rep.add(f"{key}: ran although its dependency failed")
    if typ.startswith("flaky") and name == "try-hard":
        allowed = int(typ.removeprefix("flaky"))
        completes = sum(1 for r in rows if r["state"] == "COMPLETE")
        if completes != 1 or failed > allowed:
            rep.add(f"{key}: {completes} completions, {failed} failures (at most {allowed})")
