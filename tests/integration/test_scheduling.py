"""The traverser's scheduling through the real runtime and journal: `parallel` limits hold,
copies with several entry jobs and nested groups never stall, and the work of scheduling
grows with the jobs started, not with the jobs waiting (counted, never timed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.model import JobState, RequestState
from daemon.windows import EachWindows
from tests.bench.harness import Rig

SPECS = """
sequences:
  par:
    request: true
    args:
      required:
        - name: items
    nodes:
      fan:
        category: sequence
        type: two-entry
        each: [items:item]
        parallel: 2
      join:
        category: job
        type: noop
        deps: [fan]
  two-entry:
    args:
      required:
        - name: item
    nodes:
      a:
        category: job
        type: sleep
        with:
          duration: 40ms
      b:
        category: job
        type: sleep
        with:
          duration: 40ms
      c:
        category: job
        type: noop
        deps: [a, b]
  nested:
    request: true
    args:
      required:
        - name: outer
        - name: inner
    nodes:
      fan:
        category: sequence
        type: inner-fan
        each: [outer:o]
        parallel: 2
        args:
          - expected: inner
  inner-fan:
    args:
      required:
        - name: o
        - name: inner
    nodes:
      fan:
        category: sequence
        type: one-sleep-job
        each: [inner:i]
        parallel: 2
  one-sleep-job:
    args:
      required:
        - name: i
    nodes:
      work:
        category: job
        type: sleep
        with:
          duration: 30ms
  wide:
    request: true
    args:
      required:
        - name: items
    nodes:
      fan:
        category: sequence
        type: one-noop
        each: [items:item]
        parallel: 3
"""


async def _copy_intervals(rig: Rig, rid: str) -> dict[str, tuple[float, float]]:
    """scope -> (first start, last finish) of the jobs run in it, from the journal."""
    loaded = await rig.journal.load_request(rid)
    assert loaded is not None
    out: dict[str, tuple[float, float]] = {}
    for row in await rig.journal.job_log(rid):
        assert row.started_at is not None and row.finished_at is not None
        scope = loaded.chain.jobs[row.job_id].scope
        a, b = row.started_at.timestamp(), row.finished_at.timestamp()
        lo, hi = out.get(scope, (a, b))
        out[scope] = (min(lo, a), max(hi, b))
    return out


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = cur = 0
    for _, step in points:
        cur += step
        best = max(best, cur)
    return best


async def test_parallel_limit_with_two_entry_copies(tmp_path: Path) -> None:
    async with Rig.open(tmp_path, log=False, extra_specs={"t.yaml": SPECS}) as rig:
        rid, _ = await rig.run("par", items=[f"h{i}" for i in range(6)])
        loaded = await rig.journal.load_request(rid)
        assert loaded is not None
        assert all(r.state == JobState.COMPLETE for r in loaded.jobs.values())
        group = next(iter(loaded.chain.groups.values()))
        spans = await _copy_intervals(rig, rid)
        copies = [spans[c] for c in group.copies]
        assert len(copies) == 6
        assert _max_overlap(copies) == 2  # the limit holds, and is used


async def test_nested_parallel_groups_finish(tmp_path: Path) -> None:
    async with Rig.open(tmp_path, log=False, extra_specs={"t.yaml": SPECS}) as rig:
        rid, _ = await rig.run("nested", outer=["x", "y", "z"], inner=["1", "2", "3"])
        loaded = await rig.journal.load_request(rid)
        assert loaded is not None
        assert len(loaded.chain.jobs) == 9
        spans = await _copy_intervals(rig, rid)
        scopes = loaded.chain.scopes

        def span(sid: str) -> tuple[float, float]:
            inside = [v for k, v in spans.items() if k == sid or _under(scopes, k, sid)]
            return min(a for a, _ in inside), max(b for _, b in inside)

        for group in loaded.chain.groups.values():
            assert _max_overlap([span(c) for c in group.copies]) <= 2


def _under(scopes: dict[str, Any], sid: str, ancestor: str) -> bool:
    cur = scopes[sid].parent
    while cur is not None:
        if cur == ancestor:
            return True
        cur = scopes[cur].parent
    return False


@pytest.mark.parametrize("n", [300, 900])
async def test_scheduling_work_grows_with_jobs_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """Each job is checked against its group's limit a bounded number of times (with every
    waiting job looked at on every event, this grew as n^2)."""
    checks = 0
    real = EachWindows.full

    def counted(self: EachWindows, jid: str) -> tuple[str, str] | None:
        nonlocal checks
        checks += 1
        return real(self, jid)

    monkeypatch.setattr(EachWindows, "full", counted)
    async with Rig.open(tmp_path, log=False, extra_specs={"t.yaml": SPECS}) as rig:
        rid, _ = await rig.run("wide", items=[f"h{i}" for i in range(n)])
        view = await rig.journal.get_view(rid)
        assert view is not None and view.state == RequestState.COMPLETE
    assert n <= checks <= 3 * n
