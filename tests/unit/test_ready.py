"""The traverser's ready queue and parked copies: order, deduplication, lazy deletion."""

from __future__ import annotations

import pytest

from daemon.ready import Parked, ReadyQueue


def _apply(q: ReadyQueue, ops: list[str]) -> list[str]:
    popped = []
    for op in ops:
        verb, _, arg = op.partition(" ")
        if verb == "add":
            q.add(arg)
        elif verb == "front":
            q.push_front(arg)
        elif verb == "discard":
            q.discard(arg)
        elif verb == "clear":
            q.clear()
        elif verb == "pop":
            popped.append(q.pop() or "-")
    return popped


@pytest.mark.parametrize(
    ("ops", "popped", "left"),
    [
        (["add a", "add b", "add c", "pop", "pop"], ["a", "b"], ["c"]),
        (["add a", "add a", "pop", "pop"], ["a", "-"], []),
        (["add a", "add b", "discard a", "pop"], ["b"], []),
        # discarded, then added again: it goes to the back, once
        (["add a", "add b", "discard a", "add a", "pop", "pop", "pop"], ["b", "a", "-"], []),
        # a job that could not start goes back to the front
        (["add a", "add b", "pop", "front a", "pop"], ["a", "a"], ["b"]),
        (["add a", "front a", "add b"], [], ["a", "b"]),
        (["add a", "add b", "clear", "add c", "pop"], ["c"], []),
        (["pop"], ["-"], []),
    ],
)
def test_ready_queue(ops: list[str], popped: list[str], left: list[str]) -> None:
    q = ReadyQueue()
    assert _apply(q, ops) == popped
    assert list(q) == left
    assert len(q) == len(left)
    assert bool(q) == bool(left)
    assert all(j in q for j in left)


def test_ready_queue_iteration_is_a_snapshot() -> None:
    q = ReadyQueue()
    for j in "abc":
        q.add(j)
    seen = []
    for j in q:
        seen.append(j)
        q.discard(j)
    assert seen == ["a", "b", "c"]
    assert not q


def test_parked_copies_leave_in_arrival_order() -> None:
    p = Parked()
    p.park("g1", "s2", "j2")
    p.park("g1", "s3", "j3")
    p.park("g1", "s2", "j4")  # a second entry job of copy s2
    p.park("g1", "s2", "j4")  # parked twice: kept once
    p.park("g9", "s7", "j7")
    assert len(p) == 4
    assert p.release_next("g1") == ["j2", "j4"]
    assert p.release_next("g1") == ["j3"]
    assert p.release_next("g1") == []
    assert p.release_next("nope") == []
    assert p.release_copy("g9", "s7") == ["j7"]
    assert len(p) == 0


def test_a_copy_released_by_its_start_is_skipped_later() -> None:
    p = Parked()
    p.park("g1", "s2", "j2")
    p.park("g1", "s3", "j3")
    assert p.release_copy("g1", "s2") == ["j2"]
    assert p.release_copy("g1", "s2") == []
    assert p.release_next("g1") == ["j3"]
    p.park("g1", "s4", "j4")
    p.clear()
    assert p.release_next("g1") == []
