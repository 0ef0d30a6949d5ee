"""Crash campaign: kill a real daemon at random moments, restart it, check nothing was lost.

    python -m tests.bench.crash_campaign --cycles 500 --seed 1 [--workdir DIR] [--keep]
                                         [--signal kill|term|mixed]

Each cycle starts the daemon (a real `python -m daemon serve` on a Unix socket, journal and
specs in the work directory), submits 0-3 new requests of the mix in :mod:`tests.reliability.mix`
from a thread while the daemon runs, waits a random delay and then kills it: `kill -9` (signal
`kill`); SIGTERM (`term`: exit 0 expected, nothing left RUNNING, every unfinished request
SUSPENDED, or PENDING if it never started); or a seeded mix of both plus double SIGTERMs and
SIGHUP storms (`mixed`). Some cycles kill the daemon while it is still starting (resuming
chains). At the end the daemon runs undisturbed until every request has finished, is stopped
with SIGTERM, and the journal is checked against the ledger (:func:`tests.reliability.mix.check`).
Exit status 0 when no violation was found.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import Daemon
from tests.reliability import mix

CONFIG = "shutdown_grace: 400ms\njob_stop_grace: 1s\n"


@dataclass
class Campaign:
    workdir: Path
    seed: int
    mode: str = "kill"
    log: Any = print
    #: the daemon's `event_loop`
    event_loop: str = "asyncio"
    rng: random.Random = field(init=False)
    ledger: Path = field(init=False)
    daemon: Daemon = field(init=False)
    submitted: int = 0
    created: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.ledger = self.workdir / "ledger"
        env = {"SPIND_LOG_LEVEL": "INFO", "SPIND_EVENT_LOOP": self.event_loop}
        self.daemon = Daemon(self.workdir, mix.specs(), config=CONFIG, env=env)

    # ---- one cycle

    def _submit(self, bodies: list[dict[str, Any]], gaps: list[float]) -> None:
        """Runs in a thread: POST each body (lost answers are fine: the journal decides)."""
        for body, gap in zip(bodies, gaps, strict=True):
            time.sleep(gap)
            self.submitted += 1
            try:
                status, answer = self.daemon.call("POST", "/api/v1/requests", body)
            except OSError:
                continue  # killed mid-call
            if status == 201:
                self.created += 1
            else:
                self.refused[status] += 1
                if status >= 500 and status != 503:
                    self.violations.append(f"POST answered {status}: {answer}")

    def _stop(self, how: str) -> None:
        d = self.daemon
        assert d.proc is not None
        if d.proc.poll() is not None:
            self.violations.append(f"daemon exited by itself with {d.proc.returncode}")
            return
        if how == "kill":
            d.kill9()
            return
        d.signal(signal.SIGTERM)
        if how == "term2":
            time.sleep(self.rng.uniform(0.0, 0.3))
            if d.proc.poll() is None:
                d.signal(signal.SIGTERM)
        try:
            code = d.wait_exit(30)
        except Exception:
            self.violations.append("daemon did not exit within 30 s of SIGTERM")
            d.close()
            return
        if code != 0:
            self.violations.append(f"daemon exited {code} after SIGTERM")
        self._check_suspended()

    def _check_suspended(self) -> None:
        """After a clean stop: nothing RUNNING; every unfinished request SUSPENDED, or PENDING
        if it never started (created while the daemon was stopping: it starts next time)."""
        db = sqlite3.connect(f"file:{self.daemon.journal}?mode=ro", uri=True, timeout=30)
        try:
            for table, sql in (
                ("requests", "SELECT id, state FROM requests WHERE state = 'RUNNING'"),
                (
                    "requests",
                    "SELECT id, state FROM requests r WHERE state = 'PENDING' AND EXISTS "
                    "(SELECT 1 FROM jobs j WHERE j.request_id = r.id AND j.tries > 0)",
                ),
                ("jobs", "SELECT request_id, job_id FROM jobs WHERE state = 'RUNNING'"),
                ("job_log", "SELECT request_id, job_id, try FROM job_log WHERE state='RUNNING'"),
            ):
                for row in db.execute(sql):
                    self.violations.append(f"after SIGTERM, {table} row {tuple(row)} not stopped")
        finally:
            db.close()

    def _how(self) -> str:
        if self.mode in ("kill", "term"):
            return self.mode
        return self.rng.choice(("kill", "kill", "term", "term2"))

    def cycle(self) -> None:
        rng, d = self.rng, self.daemon
        how = self._how()
        d.start(wait=False)
        if rng.random() < 0.15:  # while starting: journal open, resume, listeners
            time.sleep(rng.uniform(0.2, 1.8))
            d.kill9()
            self.kills["during start"] += 1
            return
        try:
            d.wait_ready(60)
        except AssertionError as exc:
            self.violations.append(f"daemon did not become ready: {str(exc)[-2000:]}")
            d.close()
            return
        n = rng.choice((0, 1, 1, 2, 2, 3))
        bodies = [mix.random_request(rng, self.ledger) for _ in range(n)]
        gaps = [rng.uniform(0.0, 0.4) for _ in range(n)]
        submitter = threading.Thread(target=self._submit, args=(bodies, gaps), daemon=True)
        submitter.start()
        delay = rng.uniform(0.05, 2.5)
        deadline = time.monotonic() + delay
        if self.mode == "mixed" and rng.random() < 0.3:  # a SIGHUP storm while chains run
            while time.monotonic() < deadline:
                d.signal(signal.SIGHUP)
                time.sleep(0.02)
        time.sleep(max(0.0, deadline - time.monotonic()))
        self._stop(how)
        self.kills[how] += 1
        submitter.join(30)

    # ---- the end

    def finish(self, timeout: float = 300.0) -> mix.Report:
        d = self.daemon
        d.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with d.db() as db:
                (left,) = db.execute(
                    "SELECT count(*) FROM requests WHERE state IN ('PENDING','RUNNING')"
                ).fetchone()
            if not left:
                break
            time.sleep(0.5)
        code = d.terminate(60)
        if code != 0:
            self.violations.append(f"final SIGTERM: exit {code}")
        report = mix.check(d.journal, self.ledger)
        report.violations[:0] = self.violations
        return report


def run(
    cycles: int,
    seed: int,
    workdir: Path,
    *,
    mode: str = "kill",
    log: Any = print,
    event_loop: str = "asyncio",
) -> tuple[Campaign, mix.Report]:
    camp = Campaign(workdir, seed, mode, log, event_loop)
    t0 = time.monotonic()
    try:
        for i in range(cycles):
            camp.cycle()
            if (i + 1) % 25 == 0:
                log(
                    f"cycle {i + 1}/{cycles}: {camp.created} requests created, "
                    f"{len(camp.violations)} violations, {time.monotonic() - t0:.0f}s"
                )
        report = camp.finish()
    finally:
        camp.daemon.close()
    return camp, report


def summary(camp: Campaign, rep: mix.Report, cycles: int, seconds: float) -> str:
    lines = [
        f"cycles: {cycles} ({', '.join(f'{k}: {v}' for k, v in sorted(camp.kills.items()))})",
        f"daemon starts: {camp.daemon.starts}",
        f"submitted: {camp.submitted}, created (201 seen): {camp.created}, "
        f"refused: {dict(camp.refused) or 0}",
        f"chains (requests in the journal): {rep.requests} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(rep.states.items()))})",
        f"jobs: {rep.jobs}",
        f"tries: {rep.tries} in the journal, {rep.ledger_tries} started (ledger), "
        f"{rep.interrupted} interrupted",
        f"violations: {len(rep.violations)}",
        *(f"  VIOLATION {v}" for v in rep.violations[:200]),
        f"seconds: {seconds:.0f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--signal", choices=("kill", "term", "mixed"), default="kill")
    p.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    a = p.parse_args(argv)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="spind-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"crash campaign: {a.cycles} cycles, seed {a.seed}, signal {a.signal}, "
        f"event loop {a.event_loop}, in {workdir}"
    )
    t0 = time.monotonic()
    camp, rep = run(
        a.cycles,
        a.seed,
        workdir,
        mode=a.signal,
        log=lambda s: print(s, flush=True),
        event_loop=a.event_loop,
    )
    print(summary(camp, rep, a.cycles, time.monotonic() - t0))
    if a.keep or rep.violations:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if rep.violations else 0


if __name__ == "__main__":
    sys.exit(main())
