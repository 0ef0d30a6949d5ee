"""The successors and predecessors of every job of a running chain, kept in step with its
expansions at the cost of each patch (not of the whole chain).

Predecessors are needed only for expansions and sequence retries: they are built when first
asked for. Pure: no event loop, no journal.
"""

from __future__ import annotations

from daemon.chain import Chain, ChainPatch


class Edges:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.succs = chain.successors()
        self._preds: dict[str, list[str]] | None = None  # built when first needed

    @property
    def preds(self) -> dict[str, list[str]]:
        """Predecessors of every job: needed only for expansions and sequence retries."""
        if self._preds is None:
            self._preds = self.chain.predecessors()
        return self._preds

    def patch(self, patch: ChainPatch) -> None:
        """Keep preds/succs in step with `chain.apply(patch)`: O(patch), not O(chain)."""
        removed = set(patch.remove_edges)
        for a in {a for a, _ in removed}:
            self.succs[a] = [b for b in self.succs.get(a, ()) if (a, b) not in removed]
        for job in patch.jobs:
            self.succs.setdefault(job.id, [])
        for a, b in patch.edges:
            self.succs.setdefault(a, []).append(b)
        preds = self._preds
        if preds is None:
            return  # built from the patched chain when first needed
        for b in {b for _, b in removed}:
            preds[b] = [a for a in preds.get(b, ()) if (a, b) not in removed]
        for job in patch.jobs:
            preds.setdefault(job.id, [])
        for a, b in patch.edges:
            preds.setdefault(b, []).append(a)
