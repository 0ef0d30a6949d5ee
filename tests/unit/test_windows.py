"""The `each` groups' windows: at most `parallel` copies of a group run, a copy counts from its
first try until all its jobs are done, and waiting copies get the room in arrival order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from daemon.chain import Chain, ChainJob, Group, Scope
from daemon.model import JobState
from daemon.ready import ReadyQueue
from daemon.windows import EachWindows

P = JobState.PENDING


def each_chain() -> Chain:
    """Group g1 (`parallel: 2`) has copies s2 (jobs a2 then b2), s3 (a3), s4 (two entry jobs,
    a4 and c4); group g2 (no limit) has copy s5 (a5); r sits in the root scope s1."""
    chain = Chain(request_type="r", args={})
    chain.scopes = {
        "s1": Scope(id="s1", sequence="r"),
        **{
            s: Scope(id=s, sequence="one", node="fan", parent="s1", group="g1")
            for s in ("s2", "s3", "s4")
        },
        "s5": Scope(id="s5", sequence="one", node="fan2", parent="s1", group="g2"),
    }
    chain.groups = {
        "g1": Group(id="g1", node="fan", scope="s1", parallel=2, copies=["s2", "s3", "s4"]),
        "g2": Group(id="g2", node="fan2", scope="s1", copies=["s5"]),
    }
    where = {"a2": "s2", "b2": "s2", "a3": "s3", "a4": "s4", "c4": "s4", "a5": "s5", "r": "s1"}
    chain.jobs = {j: ChainJob(id=j, name=j, type="noop", scope=s) for j, s in where.items()}
    return chain


def _pick(w: EachWindows, jid: str) -> str:
    """What the traverser does with a ready job: start it, or park it if its group is full."""
    w.ready.discard(jid)
    full = w.full(jid)
    if full is not None:
        w.park(jid, full)
        return f"park {jid}"
    w.started(jid)
    return f"start {jid}"


def _run(w: EachWindows, ops: list[str]) -> list[str]:
    """Apply `verb job` steps; what each `pick` did."""
    out: list[str] = []
    steps: dict[str, Callable[[str], None]] = {
        "pick": lambda j: out.append(_pick(w, j)),
        "done": w.done,
        "reopen": w.reopened,
        "clear": lambda _: w.clear_parked(),
    }
    for op in ops:
        verb, _, jid = op.partition(" ")
        steps[verb](jid)
    return out


@pytest.mark.parametrize(
    ("state", "tries", "ops", "picked", "ready", "active"),
    [
        # two copies run, the third waits
        ({}, {}, ["pick a2", "pick a3", "pick a4"], ["start a2", "start a3", "park a4"], [], 2),
        # a started copy's next job is not held back by the limit
        ({}, {}, ["pick a2", "pick a3", "pick b2"], ["start a2", "start a3", "start b2"], [], 2),
        # a copy makes room only when all its jobs are done; both entry jobs of the waiting
        # copy are released together, and start
        (
            {},
            {},
            ["pick a2", "pick a3", "pick a4", "pick c4", "done a2", "done b2"],
            ["start a2", "start a3", "park a4", "park c4"],
            ["a4", "c4"],
            1,
        ),
        (
            {},
            {},
            ["pick a2", "pick a3", "pick a4", "pick c4", "done a3", "pick a4", "pick c4"],
            ["start a2", "start a3", "park a4", "park c4", "start a4", "start c4"],
            [],
            2,
        ),
        # which copy waits is decided by the order its jobs became ready
        (
            {},
            {},
            ["pick a2", "pick a4", "pick a3", "done a2", "done b2"],
            ["start a2", "start a4", "park a3"],
            ["a3"],
            1,
        ),
        # a copy released is not released again by the next free place
        (
            {},
            {},
            ["pick a2", "pick a3", "pick a4", "done a3", "done a2", "done b2"],
            ["start a2", "start a3", "park a4"],
            ["a4"],
            0,
        ),
        # resumed: a running job, or one that has had a try, has started its copy
        (
            {"a2": JobState.RUNNING},
            {"a3": 1},
            ["pick a4", "pick b2", "pick a3"],
            ["park a4", "start b2", "start a3"],
            [],
            2,
        ),
        # resumed: a copy whose jobs are all done holds no place
        (
            {"a2": JobState.COMPLETE, "b2": JobState.SKIPPED},
            {"a2": 1, "b2": 1},
            ["pick a3", "pick a4"],
            ["start a3", "start a4"],
            [],
            2,
        ),
        # a sequence retry makes a done copy pending again: it takes its place back
        (
            {},
            {},
            ["pick a2", "pick a3", "done a2", "done b2", "reopen a2", "reopen b2", "pick a4"],
            ["start a2", "start a3", "park a4"],
            [],
            2,
        ),
        # stopping: parked jobs are dropped, a free place then releases nothing
        (
            {},
            {},
            ["pick a2", "pick a3", "pick a4", "clear", "done a3"],
            ["start a2", "start a3", "park a4"],
            [],
            1,
        ),
        # no `parallel`, or no group at all: nothing waits
        ({}, {}, ["pick a5", "pick r"], ["start a5", "start r"], [], 0),
    ],
)
def test_each_windows(
    state: dict[str, JobState],
    tries: dict[str, int],
    ops: list[str],
    picked: list[str],
    ready: list[str],
    active: int,
) -> None:
    chain = each_chain()
    full_state = {j: state.get(j, P) for j in chain.jobs}
    w = EachWindows(chain, ReadyQueue())
    w.add(list(chain.jobs), full_state, tries)
    assert _run(w, ops) == picked
    assert list(w.ready) == ready
    assert w.group_active["g1"] == active


def test_jobs_added_later_join_their_copies() -> None:
    """An expansion's jobs count in the copies they sit in, like the chain's first jobs."""
    chain = each_chain()
    w = EachWindows(chain, ReadyQueue())
    first = ["a2", "b2", "r"]
    w.add(first, dict.fromkeys(first, P), {})
    assert _run(w, ["pick a2"]) == ["start a2"]
    later = ["a3", "a4", "c4", "a5"]
    w.add(later, dict.fromkeys(later, P), {})
    assert _run(w, ["pick a3", "pick a4", "done a2", "done b2"]) == ["start a3", "park a4"]
    assert list(w.ready) == ["a4"]
    assert w.copies["a4"] == [("g1", "s4")]
    assert w.copies["r"] == []
    assert w.copy_open == {"s2": 0, "s3": 1, "s4": 2}  # s5 is in g2, which has no limit
    assert w.copies["a5"] == []
