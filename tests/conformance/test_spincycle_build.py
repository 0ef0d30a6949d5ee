"""Spin Cycle's grapher/resolver cases (`kind: build`) against spind's chain builder.

The cases live in ../shared/conformance/spincycle (Spin Cycle's tests, transcribed). spind's
chosen differences: no begin/end wrapper jobs (we compare the cases' `job_layers`, which drop
them) and `parallel` as a sliding window rather than batches (for those cases we compare the
jobs per name and the group limits instead of the batch layers). Sequential ids are Spin
Cycle's own allocation order, which has no meaning without the wrappers: not compared.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.builder import _topological, build, request_args
from daemon.chain import Chain, JobKind
from daemon.errors import BuildError
from daemon.specload import load_paths

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "spincycle"
if not (ROOT / "cases.yaml").exists():
    pytest.skip(f"Spin Cycle conformance suite not found at {ROOT}", allow_module_level=True)

CASES = yaml.safe_load((ROOT / "cases.yaml").read_text())
FACTORIES: dict[str, Any] = CASES["mock_job_factories"]
BUILD = [c for c in CASES["cases"] if c["kind"] == "build" and c["graph"] == "request"]


class MockJob:
    def __init__(self, factory: MockFactory, type_name: str, name: str) -> None:
        self.factory = factory
        self.type_name = type_name
        self.name = name

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        self.factory.created[self.name] = dict(args)
        rule = self.factory.rules.get(self.type_name)
        if rule is None:
            return {}
        for arg, want in (rule.get("requires") or {}).items():
            have = args.get(arg)
            ok = (
                (want == "present" and arg in args)
                or (isinstance(want, dict) and have in want["one_of"])
                or have == want
            )
            if not ok:
                raise ValueError(f"{self.type_name}: arg {arg}={have!r}, want {want!r}")
        out: dict[str, Any] = dict(rule.get("sets") or {})
        for branch in rule.get("sets_when") or []:
            if "else" in branch:
                raise ValueError(f"{self.type_name}: no rule for {args}")
            if all(args.get(k) == v for k, v in branch["if"].items()):
                out.update(branch["sets"])
                break
        return out

    def serialize(self) -> bytes:
        return b""


class MockFactory:
    def __init__(self, name: str) -> None:
        self.rules: dict[str, Any] = FACTORIES[name].get("job_types", {})
        self.created: dict[str, dict[str, Any]] = {}

    def make(self, type_name: str, *, name: str, with_: Any) -> MockJob:
        return MockJob(self, type_name, name)


def job_layers(chain: Chain) -> list[dict[str, int]]:
    preds = chain.predecessors()
    succs = chain.successors()
    layer = [j for j in chain.jobs if not preds[j]]
    out = []
    while layer:
        out.append(dict(Counter(chain.jobs[j].name for j in layer)))
        nxt: list[str] = []
        for j in layer:
            for s in succs[j]:
                if s not in nxt:
                    nxt.append(s)
        layer = nxt
    return out


async def _build(case: dict[str, Any]) -> tuple[Chain, MockFactory]:
    specs = load_paths([ROOT / "specs" / case["spec"]])
    factory = MockFactory(case["job_factory"])
    chain = await build(
        specs.sequences, case["request"], case["args"], factory, require_request=False
    )
    return chain, factory


@pytest.mark.parametrize("case", BUILD, ids=[c["id"] for c in BUILD])
async def test_build_case(case: dict[str, Any]) -> None:
    if case["expect"] == "error":
        with pytest.raises(BuildError):
            await _build(case)
        return
    chain, factory = await _build(case)
    assert all(j.kind == JobKind.JOB for j in chain.jobs.values()), "nothing deferred here"
    derived = case.get("derived_from_layers", {})
    if "job_layers" in derived and "parallel" not in case["spec"]:
        assert job_layers(chain) == derived["job_layers"]
    if "jobs_by_name" in derived:
        assert dict(Counter(j.name for j in chain.jobs.values())) == derived["jobs_by_name"]
    if "non_noop_jobs" in derived:
        assert len(chain.jobs) == derived["non_noop_jobs"]
    if "parallel" in case["spec"]:
        limits = sorted(g.parallel or 0 for g in chain.groups.values())
        assert limits == [2, 3]
    for name, want in (case.get("node_args") or {}).items():
        got = [j.args for j in chain.jobs.values() if j.name == name]
        assert got and all(a == want for a in got), (name, got)
    for name, want in (case.get("job_created_with_args") or {}).items():
        assert factory.created[name] == want
    for name, want in (case.get("node_retry") or {}).items():
        for j in chain.jobs.values():
            if j.name == name:
                assert j.retry == want["retry"]
                assert j.retry_wait == 10.0
    other = case.get("all_other_nodes") or {}
    if "retry" in other:
        named = set(case.get("node_retry") or {})
        assert all(j.retry == 0 for j in chain.jobs.values() if j.name not in named)
    retried_nodes = set()
    for wrapper, retry in (case.get("sequence_retry") or {}).items():
        node = wrapper.removeprefix("sequence_").removesuffix("_begin")
        retried_nodes.add(node)
        copies = [s for s in chain.scopes.values() if s.node == node]
        assert copies and all(s.retry == retry for s in copies)
    if "sequence_retry" in other:
        rest = [s for s in chain.scopes.values() if s.node not in retried_nodes]
        assert all(s.retry == other["sequence_retry"] for s in rest)
    if "total_jobs" in case:
        # Spin Cycle counts 4 begin/end wrapper jobs that spind does not have.
        assert len(chain.jobs) == case["total_jobs"] - 4


def test_request_args_order_and_defaults() -> None:
    case = next(c for c in BUILD if c["id"] == "build-abc-request")
    specs = load_paths([ROOT / "specs" / case["spec"]])
    got = request_args(specs.sequences[case["request"]], case["args"])
    want = {a["name"]: a["value"] for a in case["request_args"]}
    assert got == want
    assert list(got) == [a["name"] for a in case["request_args"]]


SEQGRAPH = [c for c in CASES["cases"] if c["kind"] == "build" and c["graph"] == "sequence"]


def template_layers(seq: Any) -> list[dict[str, int]]:
    """Spin Cycle's per-sequence graph: nodes by deps, unexpanded, then the `<name>_end` sink."""
    nodes = {n.name: n for n in seq.node_list()}
    order = _topological(seq.name, nodes)
    succs: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for d in nodes[n].deps:
            succs[d].append(n)
    end = f"{seq.name}_end"
    layer = [n for n in order if not nodes[n].deps]
    out: list[dict[str, int]] = []
    while layer:
        out.append(dict(Counter(layer)))
        nxt: list[str] = []
        for n in layer:
            for s in succs.get(n) or ([end] if n != end else []):
                if s not in nxt:
                    nxt.append(s)
        layer = nxt
    return out


@pytest.mark.parametrize("case", SEQGRAPH, ids=[c["id"] for c in SEQGRAPH])
def test_sequence_template_graph(case: dict[str, Any]) -> None:
    from daemon.lint import lint

    specs = load_paths([ROOT / "specs" / case["spec"]])
    # the sequences pass the graph checks (no job registry: the types are the tests' own)
    graph_errors = [d for d in lint(specs, None) if d.is_error and d.check != "unknown-job-type"]
    assert not [d for d in graph_errors if d.sequence in case["sequence_layers"]], graph_errors
    for _ in range(case.get("repeat", 1)):
        for name, want in case["sequence_layers"].items():
            got = template_layers(specs.sequences[name])
            assert got[: len(want)] == want, (name, got)
