"""The in-process workloads: the real runtime and journal (see harness.py), no HTTP.

Each returns a `Result`: the figures of one run. Latencies come from `Probe` (commit times of
RUNNING and COMPLETE rows as the traverser sees them):

- chain-N: completion-to-next-start, from a job's COMPLETE commit to its successor's RUNNING
  commit (0 when both are in one commit); and end_to_start: from the moment the job returned
  (its COMPLETE row asked for) to its successor's RUNNING commit.
- fanout-N, sleep-fanout, shell-fanout: job turnaround, from a job's RUNNING commit to its
  COMPLETE commit (the job's own run time included).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from daemon.journal.store import RequestRecord
from daemon.model import RequestState
from tests.bench.harness import Probe, Rig, percentile, rss_mb
from tests.bench.specs import items

Result = dict[str, Any]


def _latencies(values_ms: list[float]) -> Result:
    return {"p50_ms": percentile(values_ms, 50), "p99_ms": percentile(values_ms, 99)}


def _turnarounds(probe: Probe) -> list[float]:
    return [
        (probe.completed[key] - start) * 1000.0
        for key, start in probe.started.items()
        if key in probe.completed
    ]


async def chain(root: Path, n: int, *, synchronous: str = "NORMAL") -> Result:
    """One request of n noop jobs in a line."""
    async with Rig.open(root, synchronous=synchronous) as rig:
        base = rss_mb()
        probe = Probe()
        probe.install(rig.journal)
        commits0 = rig.journal.stats.commits
        rid, wall = await rig.run(f"line-{n}")
        commits = rig.journal.stats.commits - commits0
        loaded = await rig.journal.load_request(rid)
        assert loaded is not None
        preds = loaded.chain.predecessors()
        handoffs = probe.handoffs_ms(rid, preds)
        end_to_start = probe.handoffs_ms(rid, preds, since_end=True)
        return {
            "n": n,
            "wall_s": wall,
            "jobs_per_s": n / wall,
            **_latencies(handoffs),
            "end_to_start_p50_ms": percentile(end_to_start, 50),
            "end_to_start_p99_ms": percentile(end_to_start, 99),
            "commits_per_job": commits / n,
            "base_rss_mb": base,
            "peak_rss_mb": rig.peak_rss_mb,
        }


async def fanout(root: Path, n: int, *, synchronous: str = "NORMAL") -> Result:
    """`each` over n elements of a one-noop-job sequence (no parallel limit), then a join."""
    async with Rig.open(root, synchronous=synchronous) as rig:
        base = rss_mb()
        probe = Probe()
        probe.install(rig.journal)
        commits0 = rig.journal.stats.commits
        _rid, wall = await rig.run("fanout", items=items(n))
        commits = rig.journal.stats.commits - commits0
        return {
            "n": n + 1,
            "wall_s": wall,
            "jobs_per_s": (n + 1) / wall,
            **_latencies(_turnarounds(probe)),
            "commits_per_job": commits / (n + 1),
            "base_rss_mb": base,
            "peak_rss_mb": rig.peak_rss_mb,
        }


async def sleep_fanout(root: Path, n: int) -> Result:
    """n `sleep 1s` jobs at once (max_running_jobs raised to allow it); ideal wall: 1 s."""
    async with Rig.open(root, max_running_jobs=n + 10) as rig:
        probe = Probe()
        probe.install(rig.journal)
        _rid, wall = await rig.run("sleep-fanout", items=items(n))
        return {
            "n": n + 1,
            "wall_s": wall,
            "jobs_per_s": (n + 1) / wall,
            **_latencies(_turnarounds(probe)),
            "peak_rss_mb": rig.peak_rss_mb,
        }


async def shell_fanout(root: Path, n: int) -> Result:
    """n `shell` jobs running `true`, 32 copies at a time (`parallel: 32`)."""
    async with Rig.open(root) as rig:
        probe = Probe()
        probe.install(rig.journal)
        _rid, wall = await rig.run("shell-fanout", items=items(n))
        return {
            "n": n + 1,
            "wall_s": wall,
            "jobs_per_s": (n + 1) / wall,
            **_latencies(_turnarounds(probe)),
            "peak_rss_mb": rig.peak_rss_mb,
        }


async def build(root: Path, n: int) -> Result:
    """Build a chain of n jobs from the `line-N` spec and journal it (nothing runs)."""
    async with Rig.open(root) as rig:
        base = rss_mb()
        t0 = time.perf_counter()
        chain = await rig.runtime.plan(type=f"line-{n}", args={})
        t1 = time.perf_counter()
        rec = RequestRecord(
            id="01BENCH0000000000000000000",
            type=f"line-{n}",
            user="bench",
            args=chain.args,
            state=RequestState.PENDING,
            created_at=time.time(),
        )
        await rig.journal.create_request(rec, chain, body_hash="")
        t2 = time.perf_counter()
        assert len(chain.jobs) == n
        return {
            "n": n,
            "wall_s": t2 - t0,
            "jobs_per_s": n / (t2 - t0),
            "build_s": t1 - t0,
            "journal_s": t2 - t1,
            "base_rss_mb": base,
        }
