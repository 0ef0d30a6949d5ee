"""A running chain's edges follow its expansions: after each patch they are what the patched
chain's own successors() and predecessors() say, whether predecessors were built before or not."""

from __future__ import annotations

import pytest

from daemon.chain import Chain, ChainJob, ChainPatch
from daemon.edges import Edges


def line_chain() -> Chain:
    """a -> d -> z, with d a deferred node; b -> z."""
    chain = Chain(request_type="r", args={})
    chain.jobs = {j: ChainJob(id=j, name=j, type="noop", scope="s1") for j in "adzb"}
    chain.edges = [("a", "d"), ("d", "z"), ("b", "z")]
    return chain


def _job(jid: str) -> ChainJob:
    return ChainJob(id=jid, name=jid, type="noop", scope="s1")


@pytest.mark.parametrize(
    "patches",
    [
        # d expands into e1, e2 in parallel between d and z
        [
            ChainPatch(
                deferred="d",
                jobs=[_job("e1"), _job("e2")],
                edges=[("d", "e1"), ("d", "e2"), ("e1", "z"), ("e2", "z")],
                remove_edges=[("d", "z")],
            )
        ],
        # d expands into nothing: nothing changes
        [ChainPatch(deferred="d")],
        # two expansions in a row, the second of a node the first added
        [
            ChainPatch(
                deferred="d",
                jobs=[_job("d2")],
                edges=[("d", "d2"), ("d2", "z")],
                remove_edges=[("d", "z")],
            ),
            ChainPatch(
                deferred="d2",
                jobs=[_job("f")],
                edges=[("d2", "f"), ("f", "z")],
                remove_edges=[("d2", "z")],
            ),
        ],
    ],
)
@pytest.mark.parametrize("preds_first", [False, True])
def test_edges_follow_patches(patches: list[ChainPatch], preds_first: bool) -> None:
    chain = line_chain()
    edges = Edges(chain)
    assert edges.succs == chain.successors()
    if preds_first:
        assert edges.preds == chain.predecessors()
    for patch in patches:
        chain.apply(patch)
        edges.patch(patch)
        assert edges.succs == chain.successors()
        assert edges.preds == chain.predecessors()
