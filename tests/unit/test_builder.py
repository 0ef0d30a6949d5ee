"""The chain builder: request + args -> Chain, deferred expansion, and every way a build fails.

Specs are inline YAML; job types are a small table-backed fake whose create() hook returns the
outputs the table gives its type (or raises, or serializes). Expansion is checked the way the
runtime drives it: a job's outputs go into a ScopeVars, expand() makes a patch, and the patch
is applied to both the chain and the values.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.builder import Limits, build, expand, request_args
from daemon.chain import Chain, ChainJob, JobKind, ScopeVars
from daemon.errors import ArgError, BuildError
from daemon.spec import SequenceSpec
from daemon.specload import load_text

# ---- the fake job factory


class FakeJob:
    def __init__(self, factory: FakeFactory, type_name: str, name: str, with_: Any) -> None:
        self.factory = factory
        self.type_name = type_name
        self.name = name
        self.with_ = dict(with_)
        self.rule: dict[str, Any] = factory.table.get(type_name, {})

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        self.factory.created.append((self.name, dict(args)))
        if "raise" in self.rule:
            raise ValueError(self.rule["raise"])
        outputs = self.rule.get("outputs", {})
        return dict(outputs(args) if callable(outputs) else outputs)

    def serialize(self) -> bytes:
        return b"data:" + self.name.encode() if self.rule.get("serialize") else b""


class FakeFactory:
    """`table`: type name -> {"outputs": dict or fn(args), "raise": msg, "serialize": True}.

    Types listed in `unknown` fail in make(), as an unknown job type does.
    """

    def __init__(
        self,
        table: Mapping[str, dict[str, Any]] | None = None,
        unknown: frozenset[str] = frozenset(),
    ) -> None:
        self.table = dict(table or {})
        self.unknown = unknown
        self.created: list[tuple[str, dict[str, Any]]] = []

    def make(self, type_name: str, *, name: str, with_: Mapping[str, Any]) -> FakeJob:
        if type_name in self.unknown:
            raise LookupError(f"unknown job type {type_name!r}")
        return FakeJob(self, type_name, name, with_)


# ---- helpers


def load(text: str) -> dict[str, SequenceSpec]:
    result = load_text(textwrap.dedent(text), "t.yaml")
    assert not [d for d in result.diagnostics if d.is_error], [
        d.format() for d in result.diagnostics
    ]
    return result.sequences


async def chain_of(
    text: str,
    request: str,
    args: Mapping[str, Any],
    table: Mapping[str, dict[str, Any]] | None = None,
    limits: Limits | None = None,
) -> Chain:
    return await build(load(text), request, args, FakeFactory(table), limits=limits)


def by_name(chain: Chain, name: str) -> list[ChainJob]:
    return [j for j in chain.jobs.values() if j.name == name]


def one(chain: Chain, name: str) -> ChainJob:
    jobs = by_name(chain, name)
    assert len(jobs) == 1, (name, jobs)
    return jobs[0]


def name_edges(chain: Chain) -> Counter[tuple[str, str]]:
    return Counter((chain.jobs[a].name, chain.jobs[b].name) for a, b in chain.edges)


def layers(chain: Chain) -> list[list[str]]:
    """Job names by longest distance from a start job (so that layers are well defined)."""
    preds = chain.predecessors()
    depth: dict[str, int] = {}

    def d(j: str) -> int:
        if j not in depth:
            depth[j] = 1 + max((d(p) for p in preds[j]), default=-1)
        return depth[j]

    out: dict[int, list[str]] = {}
    for j in chain.jobs:
        out.setdefault(d(j), []).append(chain.jobs[j].name)
    return [sorted(out[k]) for k in sorted(out)]


def args_of(chain: Chain, name: str) -> list[dict[str, Any]]:
    """The build-time args of every job with this name, in a stable order."""
    return sorted(
        (j.args for j in by_name(chain, name)), key=lambda a: json.dumps(a, sort_keys=True)
    )


def assert_sound(chain: Chain) -> None:
    """Every edge joins known jobs, every job's scope exists, and the graph has no cycle."""
    for a, b in chain.edges:
        assert a in chain.jobs and b in chain.jobs, (a, b)
    assert len(set(chain.edges)) == len(chain.edges), "repeated edge"
    for j in chain.jobs.values():
        assert j.scope in chain.scopes
    for s in chain.scopes.values():
        assert s.parent is None or s.parent in chain.scopes
    indeg = Counter(b for _, b in chain.edges)
    ready = [j for j in chain.jobs if indeg[j] == 0]
    seen = 0
    succ = chain.successors()
    while ready:
        cur = ready.pop()
        seen += 1
        for s in succ[cur]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    assert seen == len(chain.jobs), "the chain has a cycle"


def runtime(chain: Chain) -> ScopeVars:
    return ScopeVars(chain)


async def run_expand(
    chain: Chain,
    values: ScopeVars,
    deferred: str,
    factory: FakeFactory | None = None,
    limits: Limits | None = None,
) -> list[str]:
    """Expand one deferred node and apply the patch as the runtime does; the new job ids."""
    patch = await expand(chain, deferred, values, factory or FakeFactory(), limits=limits)
    chain.apply(patch)
    values.apply_patch(patch)
    assert_sound(chain)
    return [j.id for j in patch.jobs]


# ---- nesting, renaming, create() hooks

NESTED = """
sequences:
  top:
    request: true
    args:
      required:
        - name: cluster
      optional:
        - name: env
          default: staging
      static:
        - name: team
          default: infra
    nodes:
      start:
        category: job
        type: plain
        args: [cluster]
      call-mid:
        category: sequence
        type: mid
        args:
          - expected: c
            given: cluster
          - expected: team
        sets:
          - arg: midOut
            as: final
        deps: [start]
      finish:
        category: job
        type: plain
        args:
          - expected: result
            given: final
          - expected: env
        deps: [call-mid]
  mid:
    args:
      required:
        - name: c
        - name: team
    nodes:
      call-inner:
        category: sequence
        type: inner
        args:
          - expected: name
            given: c
        sets:
          - arg: innerOut
            as: midOut
  inner:
    args:
      required:
        - name: name
      optional:
        - name: depth
          default: "3"
    nodes:
      work:
        category: job
        type: producer
        args:
          - expected: host
            given: name
          - expected: depth
        sets:
          - arg: out
            as: innerOut
      check:
        category: job
        type: plain
        args:
          - expected: produced
            given: innerOut
        deps: [work]
"""


async def test_three_deep_nesting_with_renaming_and_create_outputs() -> None:
    factory = FakeFactory({"producer": {"outputs": lambda a: {"out": f"made-{a['host']}"}}})
    chain = await build(load(NESTED), "top", {"cluster": "c1"}, factory)
    assert_sound(chain)
    # no begin/end wrappers: the called sequences are spliced in between start and finish
    assert layers(chain) == [["start"], ["work"], ["check"], ["finish"]]
    assert one(chain, "work").args == {"host": "c1", "depth": "3"}
    assert one(chain, "check").args == {"produced": "made-c1"}
    # create()'s output climbed two scopes, renamed innerOut -> midOut -> final
    assert one(chain, "finish").args == {"result": "made-c1", "env": "staging"}
    assert one(chain, "work").inputs == [("host", "name"), ("depth", "depth")]
    assert one(chain, "work").sets == [("out", "innerOut")]
    # the scopes: top <- mid (called by call-mid) <- inner (called by call-inner)
    work_scope = chain.scopes[one(chain, "work").scope]
    mid_scope = chain.scopes[work_scope.parent or ""]
    assert (work_scope.sequence, work_scope.node) == ("inner", "call-inner")
    assert (mid_scope.sequence, mid_scope.node, mid_scope.parent) == ("mid", "call-mid", "s1")
    assert mid_scope.imports == [("c", "cluster"), ("team", "team")]
    assert mid_scope.lifts == [("midOut", "final")]
    assert work_scope.vars == {"depth": "3", "innerOut": "made-c1"}
    assert factory.created[0] == ("start", {"cluster": "c1"})


async def test_outputs_set_at_run_time_flow_through_scope_vars() -> None:
    chain = await chain_of(NESTED, "top", {"cluster": "c1"})
    assert one(chain, "finish").args == {"env": "staging"}  # result: only known at run time
    values = runtime(chain)
    values.apply_outputs(one(chain, "work"), {"out": "late"})
    assert values.job_args(one(chain, "check")) == {"produced": "late"}
    assert values.job_args(one(chain, "finish")) == {"result": "late", "env": "staging"}


async def test_create_that_returns_outputs_must_set_every_declared_arg() -> None:
    spec = """
    sequences:
      r:
        request: true
        nodes:
          a:
            category: job
            type: partial
            sets: [x, y]
    """
    with pytest.raises(BuildError, match=r"node 'a'.*declares in `sets`: y"):
        await chain_of(spec, "r", {}, {"partial": {"outputs": {"x": "1"}}})
    chain = await chain_of(spec, "r", {}, {"partial": {"outputs": {"x": "1", "y": "2", "z": "3"}}})
    values = runtime(chain)
    assert values.lookup("s1", "y") == (True, "2")
    assert values.lookup("s1", "z") == (False, None)  # not declared: not set


async def test_job_fields_come_from_the_node() -> None:
    spec = """
    sequences:
      r:
        request: true
        nodes:
          a:
            category: job
            type: ser
            retry: 3
            retryWait: 1m30s
            retryBackoff: 2
            retryMaxWait: 10m
            retryOn: [75]
            timeout: 5s
            onInterrupt: hold
            with: {cmd: [echo, "{{x}}"], n: 1}
          b:
            category: job
            type: plain
            deps: [a]
    """
    chain = await chain_of(spec, "r", {}, {"ser": {"serialize": True}})
    a, b = one(chain, "a"), one(chain, "b")
    assert (a.retry, a.retry_wait, a.retry_backoff, a.retry_max_wait) == (3, 90.0, 2.0, 600.0)
    assert (a.retry_on, a.timeout, a.on_interrupt) == ([75], 5.0, "hold")
    assert a.with_ == {"cmd": ["echo", "{{x}}"], "n": "1"}  # scalars stay text
    assert a.data == b"data:a"
    assert (b.retry, b.retry_wait, b.timeout, b.on_interrupt, b.data) == (
        0,
        0.0,
        None,
        "rerun",
        None,
    )
    assert chain.edges == [(a.id, b.id)]


async def test_sequence_retry_is_on_the_copy_not_the_jobs() -> None:
    spec = """
    sequences:
      r:
        request: true
        args:
          required: [{name: hosts}]
        nodes:
          each-seq:
            category: sequence
            type: s
            each: [hosts:host]
            retry: 2
            retryWait: 3s
      s:
        args:
          required: [{name: host}]
        nodes:
          x: {category: job, type: t, args: [host]}
    """
    chain = await chain_of(spec, "r", {"hosts": ["h1", "h2"]})
    copies = [s for s in chain.scopes.values() if s.node == "each-seq"]
    assert [(s.retry, s.retry_wait) for s in copies] == [(2, 3.0), (2, 3.0)]
    assert all(j.retry == 0 for j in chain.jobs.values())


# ---- each, parallel, conditionals (table)

EACH_IN_EACH = """
sequences:
  r:
    request: true
    args:
      required:
        - name: clusters
        - name: hosts
    nodes:
      per-cluster:
        category: sequence
        type: cluster-seq
        each: [clusters:cluster]
        parallel: 1
        args: [hosts]
  cluster-seq:
    args:
      required: [{name: cluster}, {name: hosts}]
    nodes:
      per-host:
        category: job
        type: t
        each: [hosts:host]
        parallel: 2
        args: [cluster]
      after-hosts:
        category: job
        type: t
        args: [cluster]
        deps: [per-host]
"""

COND_IN_EACH = """
sequences:
  r:
    request: true
    args:
      required: [{name: envs}]
    nodes:
      per-env:
        category: conditional
        each: [envs:env]
        if: env
        eq:
          prod: careful
          skip: noop
          default: quick
      done:
        category: job
        type: t
        deps: [per-env]
  careful:
    args:
      required: [{name: env}]
    nodes:
      backup: {category: job, type: t, args: [env]}
      change: {category: job, type: t, args: [env], deps: [backup]}
  quick:
    args:
      required: [{name: env}]
    nodes:
      change: {category: job, type: t, args: [env]}
"""

JOB_EACH = """
sequences:
  r:
    request: true
    args:
      required: [{name: hosts}, {name: ports}]
      optional: [{name: limit, default: "3"}]
    nodes:
      before: {category: job, type: t}
      ping:
        category: job
        type: t
        each: [hosts:host, ports:port]
        parallel: limit
        args:
          - expected: target
            given: host
        deps: [before]
      after: {category: job, type: t, deps: [ping]}
"""

RENAMED_ELEMENT = """
sequences:
  r:
    request: true
    args:
      required: [{name: hosts}]
    nodes:
      per:
        category: sequence
        type: s
        each: [hosts:h]
        args:
          - expected: host
            given: h
  s:
    args:
      required: [{name: host}]
    nodes:
      x: {category: job, type: t, args: [host]}
"""

NOOP_BRANCH = """
sequences:
  r:
    request: true
    args:
      optional: [{name: mode, default: ""}]
    nodes:
      a: {category: job, type: t}
      choose:
        category: conditional
        if: mode
        eq: {full: s, default: noop}
        deps: [a]
      b: {category: job, type: t, deps: [choose]}
      c: {category: job, type: t, deps: [choose, a]}
  s:
    nodes:
      x: {category: job, type: t}
"""


@pytest.mark.parametrize(
    ("spec", "args", "want_layers", "want_args", "want_groups"),
    [
        pytest.param(
            EACH_IN_EACH,
            {"clusters": ["c1", "c2"], "hosts": ["h1", "h2", "h3"]},
            [["per-host"] * 6, ["after-hosts"] * 2],
            {
                "per-host": [
                    {"cluster": c, "host": h} for c in ("c1", "c2") for h in ("h1", "h2", "h3")
                ],
                "after-hosts": [{"cluster": "c1"}, {"cluster": "c2"}],
            },
            [("per-cluster", 1, 2), ("per-host", 2, 3), ("per-host", 2, 3)],
            id="each-in-each",
        ),
        pytest.param(
            COND_IN_EACH,
            {"envs": ["prod", "dev", "skip", "qa"]},
            [["backup", "change", "change"], ["change"], ["done"]],
            {
                "backup": [{"env": "prod"}],
                "change": [{"env": "dev"}, {"env": "prod"}, {"env": "qa"}],
            },
            [("per-env", None, 3)],  # the noop copy makes no scope
            id="conditional-in-each",
        ),
        pytest.param(
            JOB_EACH,
            {"hosts": ["a", "b"], "ports": ["1", "2"]},
            [["before"], ["ping", "ping"], ["after"]],
            {
                "ping": [
                    {"host": "a", "port": "1", "target": "a"},
                    {"host": "b", "port": "2", "target": "b"},
                ]
            },
            [("ping", 3, 2)],
            id="job-each-zipped-parallel-arg",
        ),
        pytest.param(
            JOB_EACH,
            {"hosts": [], "ports": [], "limit": "1"},
            [["before"], ["after"]],  # an empty each is a noop: after hangs off before
            {"ping": []},
            [("ping", 1, 0)],
            id="empty-each",
        ),
        pytest.param(
            RENAMED_ELEMENT,
            {"hosts": ["h1", "h2"]},
            [["x", "x"]],
            {"x": [{"host": "h1"}, {"host": "h2"}]},
            [("per", None, 2)],
            id="element-renamed-by-node-args",
        ),
        pytest.param(
            NOOP_BRANCH,
            {},
            [["a"], ["b", "c"]],
            {"a": [{}], "x": []},
            [],
            id="noop-branch",
        ),
        pytest.param(
            NOOP_BRANCH,
            {"mode": "full"},
            [["a"], ["x"], ["b", "c"]],
            {"x": [{}]},
            [],
            id="chosen-branch",
        ),
    ],
)
async def test_shapes(
    spec: str,
    args: dict[str, Any],
    want_layers: list[list[str]],
    want_args: dict[str, list[dict[str, Any]]],
    want_groups: list[tuple[str, int | None, int]],
) -> None:
    chain = await chain_of(spec, "r", args)
    assert_sound(chain)
    assert all(j.kind == JobKind.JOB for j in chain.jobs.values())
    assert layers(chain) == [sorted(layer) for layer in want_layers]
    for name, want in want_args.items():
        assert args_of(chain, name) == sorted(want, key=lambda a: json.dumps(a, sort_keys=True))
    got_groups = sorted((g.node, g.parallel, len(g.copies)) for g in chain.groups.values())
    assert got_groups == sorted(want_groups, key=str)
    for g in chain.groups.values():
        for copy in g.copies:
            assert chain.scopes[copy].group == g.id
            assert chain.scopes[copy].parent == g.scope


async def test_each_copies_are_spliced_between_deps_and_dependents() -> None:
    chain = await chain_of(JOB_EACH, "r", {"hosts": ["a", "b", "c"], "ports": ["1", "2", "3"]})
    assert name_edges(chain) == Counter({("before", "ping"): 3, ("ping", "after"): 3})
    each_seq = await chain_of(EACH_IN_EACH, "r", {"clusters": ["c1"], "hosts": ["h1", "h2"]})
    assert name_edges(each_seq) == Counter({("per-host", "after-hosts"): 2})


@pytest.mark.parametrize(
    ("parallel", "args", "want"),
    [
        ("2", {}, 2),
        ("+4", {}, 4),
        ("lim", {"lim": "5"}, 5),
        ("lim", {"lim": " 7 "}, 7),
        (None, {}, None),
    ],
)
async def test_parallel(parallel: str | None, args: dict[str, str], want: int | None) -> None:
    line = f"parallel: '{parallel}'" if parallel is not None else ""
    spec = f"""
    sequences:
      r:
        request: true
        args:
          required: [{{name: hosts}}]
          optional: [{{name: lim, default: "1"}}]
        nodes:
          a:
            category: job
            type: t
            each: [hosts:host]
            {line}
    """
    chain = await chain_of(spec, "r", {"hosts": ["x", "y"], **args})
    assert [g.parallel for g in chain.groups.values()] == [want]


# ---- request args


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ({"a": "1"}, {"a": "1", "o": "175", "empty": "", "s": "yes"}),
        ({"a": "1", "o": "2", "empty": "x"}, {"a": "1", "o": "2", "empty": "x", "s": "yes"}),
        ({"a": ["l", "m"]}, {"a": ["l", "m"], "o": "175", "empty": "", "s": "yes"}),
    ],
)
def test_request_args(given: dict[str, Any], want: dict[str, Any]) -> None:
    seq = load(ARGS_SPEC)["r"]
    got = request_args(seq, given)
    assert got == want
    assert list(got) == ["a", "o", "empty", "s"]  # required, optional, static


ARGS_SPEC = """
sequences:
  r:
    request: true
    args:
      required:
        - name: a
      optional:
        - name: o
          default: 175
        - name: empty
      static:
        - name: s
          default: yes
    nodes:
      j: {category: job, type: t, args: [a]}
  helper:
    nodes:
      j: {category: job, type: t}
"""


@pytest.mark.parametrize(
    ("args", "fragment", "details"),
    [
        ({}, "missing required arg for 'r': a", {"missing": ["a"]}),
        (
            {"a": "1", "nope": "x"},
            "unknown arg 'nope' for 'r' (its args: a, o, empty)",
            {"arg": "nope"},
        ),
        ({"a": "1", "s": "x"}, "arg 's' is static", {"arg": "s"}),
        ({"a": 5}, "arg 'a' must be a string or a list of strings, got a number", {"arg": "a"}),
        ({"a": None}, "arg 'a' must be a string or a list of strings, got null", {"arg": "a"}),
        ({"a": True}, "got a boolean", {"arg": "a"}),
        ({"a": {"k": "v"}}, "got an object", {"arg": "a"}),
        ({"a": ["x", 1]}, "got a list", {"arg": "a"}),
        ({"a": "1", "o": 2.5}, "arg 'o' must be a string", {"arg": "o"}),
    ],
)
async def test_bad_args(args: dict[str, Any], fragment: str, details: Any) -> None:
    with pytest.raises(ArgError) as info:
        await chain_of(ARGS_SPEC, "r", args)
    assert fragment in info.value.message
    assert info.value.details == details
    assert info.value.status == 400


# ---- every other bad input


def seq_with(nodes: str, args: str = "", extra: str = "") -> str:
    """A spec whose request `r` has these nodes (and args); `extra`: more sequences."""

    def block(text: str, indent: str) -> str:
        return textwrap.indent(textwrap.dedent(text).strip("\n") + "\n", indent)

    out = "sequences:\n  r:\n    request: true\n"
    if args:
        out += "    args:\n" + block(args, "      ")
    out += "    nodes:\n" + block(nodes, "      ")
    return out + (block(extra, "  ") if extra else "")


RECURSIVE = seq_with(
    """
    again:
      category: conditional
      if: go
      eq: {"yes": r, default: noop}
    """,
    args="optional: [{name: go, default: 'yes'}]",
)


BAD_BUILDS = [
    ("unknown-type", ARGS_SPEC, "nope", {}, "unknown request type 'nope'"),
    ("empty-type", ARGS_SPEC, "", {}, "request type is empty"),
    ("not-a-request", ARGS_SPEC, "helper", {}, "lacks `request: true`"),
    (
        "each-over-string",
        seq_with("a: {category: job, type: t, each: [hosts:h]}", "required: [{name: hosts}]"),
        "r",
        {"hosts": "a,b"},
        "each: arg 'hosts' is a string, expected a list",
    ),
    (
        "unequal-each",
        seq_with(
            "a: {category: job, type: t, each: [hs:h, ps:p]}", "required: [{name: hs}, {name: ps}]"
        ),
        "r",
        {"hs": ["1", "2"], "ps": ["1"]},
        "each lists must be equally long (hs=2, ps=1)",
    ),
    (
        "each-not-list-element",
        seq_with("a: {category: job, type: t, each: [hosts]}", "required: [{name: hosts}]"),
        "r",
        {"hosts": ["x"]},
        "each entries must be list:element",
    ),
    (
        "if-matches-nothing",
        seq_with(
            "c: {category: conditional, if: m, eq: {a: s1, b: s1}}",
            "required: [{name: m}]",
            "s1:\n  nodes:\n    x: {category: job, type: t}\n",
        ),
        "r",
        {"m": "zzz"},
        "'if: m' value 'zzz' matches none of: a, b, and there is no default",
    ),
    (
        "if-on-a-list",
        seq_with("c: {category: conditional, if: m, eq: {default: noop}}", "required: [{name: m}]"),
        "r",
        {"m": ["a"]},
        "arg 'm' (if) must be a string, got a list",
    ),
    (
        "parallel-zero",
        seq_with(
            "a: {category: job, type: t, each: [hs:h], parallel: 0}", "required: [{name: hs}]"
        ),
        "r",
        {"hs": ["1"]},
        "parallel must be a positive integer, got 0",
    ),
    (
        "parallel-negative",
        seq_with(
            "a: {category: job, type: t, each: [hs:h], parallel: -2}", "required: [{name: hs}]"
        ),
        "r",
        {"hs": ["1"]},
        "parallel must be a positive integer, got -2",
    ),
    (
        "parallel-arg-not-a-number",
        seq_with(
            "a: {category: job, type: t, each: [hs:h], parallel: p}",
            "required: [{name: hs}, {name: p}]",
        ),
        "r",
        {"hs": ["1"], "p": "many"},
        "parallel: arg 'p' is 'many', not a positive integer",
    ),
    (
        "parallel-arg-zero",
        seq_with(
            "a: {category: job, type: t, each: [hs:h], parallel: p}",
            "required: [{name: hs}, {name: p}]",
        ),
        "r",
        {"hs": ["1"], "p": "0"},
        "not a positive integer",
    ),
    ("recursion", RECURSIVE, "r", {}, "sequences nest deeper than 32"),
    (
        "cycle",
        seq_with(
            """
            a: {category: job, type: t, deps: [c]}
            b: {category: job, type: t, deps: [a]}
            c: {category: job, type: t, deps: [b]}
            d: {category: job, type: t}
            """
        ),
        "r",
        {},
        "cyclical dependencies among ['a', 'b', 'c']",
    ),
    (
        "self-dep",
        seq_with("a: {category: job, type: t, deps: [a]}"),
        "r",
        {},
        "cyclical dependencies among ['a']",
    ),
    (
        "unknown-dep",
        seq_with("a: {category: job, type: t, deps: [ghost]}"),
        "r",
        {},
        "node 'a': unknown dep 'ghost'",
    ),
    (
        "unknown-sequence",
        seq_with("a: {category: sequence, type: ghost}"),
        "r",
        {},
        "node 'a': unknown sequence 'ghost'",
    ),
    (
        "subsequence-arg-not-passed",
        seq_with(
            "a: {category: sequence, type: s1}",
            extra="s1:\n  args:\n    required: [{name: need}]\n  nodes:\n"
            "    x: {category: job, type: t}\n",
        ),
        "r",
        {},
        "required arg 'need' of 's1' is not passed",
    ),
    (
        "create-raises",
        seq_with("a: {category: job, type: boom}"),
        "r",
        {},
        "node 'a': create() of job type 'boom' failed: kaboom",
    ),
    (
        "unknown-job-type",
        seq_with("a: {category: job, type: missing}"),
        "r",
        {},
        "node 'a': job type 'missing': unknown job type 'missing'",
    ),
    (
        "bad-retry-wait",
        seq_with("a: {category: job, type: t, retry: 1, retryWait: soon}"),
        "r",
        {},
        "retryWait: invalid duration 'soon'",
    ),
    (
        "bad-timeout",
        seq_with("a: {category: job, type: t, timeout: 5 parsecs}"),
        "r",
        {},
        "timeout: invalid duration",
    ),
]


@pytest.mark.parametrize(
    ("spec", "request_type", "args", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_BUILDS],
)
async def test_bad_builds(
    spec: str, request_type: str, args: dict[str, Any], fragment: str
) -> None:
    factory = FakeFactory({"boom": {"raise": "kaboom"}}, unknown=frozenset({"missing"}))
    with pytest.raises(BuildError) as info:
        await build(load(spec), request_type, args, factory)
    assert not isinstance(info.value, ArgError)
    assert fragment in info.value.message


async def test_limits() -> None:
    spec = seq_with("a: {category: job, type: t, each: [hs:h]}", "required: [{name: hs}]")
    with pytest.raises(BuildError, match=r"more than 5 jobs \(max_jobs_per_request\)"):
        await chain_of(spec, "r", {"hs": [str(i) for i in range(6)]}, limits=Limits(max_jobs=5))
    chain = await chain_of(spec, "r", {"hs": [str(i) for i in range(5)]}, limits=Limits(max_jobs=5))
    assert len(chain.jobs) == 5
    with pytest.raises(BuildError, match="sequences nest deeper than 4"):
        await chain_of(RECURSIVE, "r", {}, limits=Limits(max_depth=4))
    # the same spec builds when the conditional stops the recursion
    assert (await chain_of(RECURSIVE, "r", {"go": "no"})).jobs == {}


async def test_each_over_a_million_elements_fails_before_building_anything() -> None:
    spec = seq_with("a: {category: job, type: t, each: [hs:h]}", "required: [{name: hs}]")
    factory = FakeFactory()
    with pytest.raises(BuildError) as info:
        await build(load(spec), "r", {"hs": ["h"] * 1_000_000}, factory)
    assert "each over 1000000 elements; the limit is 100000 (max_each_elements)" in str(info.value)
    assert factory.created == []  # failed before a single job was made


# ---- deferred nodes

FANOUT = """
sequences:
  r:
    request: true
    args:
      required: [{name: csv}]
      optional: [{name: width, default: "2"}]
    nodes:
      split:
        category: job
        type: splitter
        args: [csv]
        sets:
          - arg: list
            as: hosts
      drain:
        category: sequence
        type: drain-host
        each: [hosts:host]
        parallel: width
        args: [csv]
        sets: [drained]
        deps: [split]
      report:
        category: job
        type: t
        args:
          - expected: last
            given: drained
        deps: [drain]
  drain-host:
    args:
      required: [{name: host}, {name: csv}]
    nodes:
      stop:
        category: job
        type: t
        args: [host]
      wait:
        category: job
        type: t
        args: [host, csv]
        sets: [drained]
        deps: [stop]
"""


async def test_deferred_each_expands_between_the_deferred_node_and_its_successors() -> None:
    chain = await chain_of(FANOUT, "r", {"csv": "a,b,c"})
    split, drain, report = one(chain, "split"), one(chain, "drain"), one(chain, "report")
    assert drain.kind == JobKind.DEFERRED
    assert (drain.type, drain.spec_sequence, drain.spec_node) == ("each", "r", "drain")
    assert drain.args == {"waitsFor": "each hosts"}
    assert chain.edges == [(split.id, drain.id), (drain.id, report.id)]
    assert chain.groups == {}
    before = msgspec.json.encode(chain)

    values = runtime(chain)
    values.apply_outputs(split, {"list": ["a", "b", "c"]})
    patch = await expand(chain, drain.id, values, FakeFactory())
    assert msgspec.json.encode(chain) == before, "expand() must not touch the chain"
    assert patch.deferred == drain.id
    assert patch.remove_edges == [(drain.id, report.id)]
    chain.apply(patch)
    values.apply_patch(patch)
    assert_sound(chain)

    assert Counter(j.name for j in patch.jobs) == {"stop": 3, "wait": 3}
    assert name_edges(chain) == Counter(
        {("split", "drain"): 1, ("drain", "stop"): 3, ("stop", "wait"): 3, ("wait", "report"): 3}
    )
    [group] = chain.groups.values()
    assert (group.node, group.scope, group.parallel, len(group.copies)) == ("drain", "s1", 2, 3)
    hosts = sorted(values.job_args(j)["host"] for j in patch.jobs if j.name == "wait")
    assert hosts == ["a", "b", "c"]
    assert all(values.job_args(j)["csv"] == "a,b,c" for j in patch.jobs if j.name == "wait")
    assert all(chain.jobs[j].scope in group.copies for j in (x.id for x in patch.jobs))
    assert chain.next_id == patch.next_id > max(int(j[1:]) for j in chain.jobs)
    # a copy's output is lifted out of its scope to the report job
    last_wait = [j for j in patch.jobs if j.name == "wait"][-1]
    values.apply_outputs(last_wait, {"drained": "c"})
    assert values.job_args(report) == {"last": "c"}


async def test_deferred_expansion_of_an_empty_list_keeps_the_edges() -> None:
    chain = await chain_of(FANOUT, "r", {"csv": ""})
    values = runtime(chain)
    values.apply_outputs(one(chain, "split"), {"list": []})
    new = await run_expand(chain, values, one(chain, "drain").id)
    assert new == []
    assert name_edges(chain) == Counter({("split", "drain"): 1, ("drain", "report"): 1})


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        ({"list": "a,b"}, "each: arg 'hosts' is a string, expected a list"),
        ({}, "arg 'hosts' (each) is not set"),
        ({"list": ["h"] * 200_001}, "each over 200001 elements; the limit is 100000"),
    ],
)
async def test_deferred_expansion_errors(outputs: dict[str, Any], fragment: str) -> None:
    chain = await chain_of(FANOUT, "r", {"csv": "x"})
    values = runtime(chain)
    values.apply_outputs(one(chain, "split"), outputs)
    with pytest.raises(BuildError) as info:
        await expand(chain, one(chain, "drain").id, values, FakeFactory())
    assert fragment in info.value.message


async def test_deferred_parallel_and_bad_parallel_at_run_time() -> None:
    spec = FANOUT.replace("parallel: width", "parallel: cap").replace(
        "        deps: [split]\n",
        "        deps: [split, size]\n      size:\n        category: job\n        type: t\n"
        "        sets: [cap]\n",
    )
    chain = await chain_of(spec, "r", {"csv": "x"}, {"splitter": {"outputs": {"list": ["a"]}}})
    # the list is known at build time, the parallel limit is not: still deferred
    assert one(chain, "drain").args == {"waitsFor": "parallel cap"}
    values = runtime(chain)
    values.apply_outputs(one(chain, "size"), {"cap": "0"})
    with pytest.raises(BuildError, match="parallel: arg 'cap' is '0', not a positive integer"):
        await expand(chain, one(chain, "drain").id, values, FakeFactory())
    values.apply_outputs(one(chain, "size"), {"cap": "1"})
    assert len(await run_expand(chain, values, one(chain, "drain").id)) == 2  # one copy of 2 jobs
    assert [g.parallel for g in chain.groups.values()] == [1]


COND_LATE = """
sequences:
  r:
    request: true
    args:
      required: [{name: hosts}]
    nodes:
      decide:
        category: job
        type: t
        sets: [mode]
      pick:
        category: conditional
        if: mode
        eq: {fast: quick, off: noop}
        deps: [decide]
      per-host:
        category: conditional
        each: [hosts:host]
        if: mode
        eq: {fast: quick, default: noop}
        deps: [decide]
      end:
        category: job
        type: t
        deps: [pick, per-host]
  quick:
    nodes:
      go: {category: job, type: t}
"""


async def test_deferred_conditionals() -> None:
    chain = await chain_of(COND_LATE, "r", {"hosts": ["h1", "h2"]})
    pick, per_host = one(chain, "pick"), one(chain, "per-host")
    assert (pick.kind, pick.type, pick.args) == (
        JobKind.DEFERRED,
        "conditional",
        {"waitsFor": "if mode"},
    )
    # an each whose copies choose a branch by an arg set at run time is deferred as a whole
    assert (per_host.kind, per_host.type, per_host.args) == (
        JobKind.DEFERRED,
        "each",
        {"waitsFor": "if mode"},
    )
    values = runtime(chain)
    values.apply_outputs(one(chain, "decide"), {"mode": "fast"})
    assert len(await run_expand(chain, values, pick.id)) == 1
    assert len(await run_expand(chain, values, per_host.id)) == 2
    assert name_edges(chain) == Counter(
        {
            ("decide", "pick"): 1,
            ("decide", "per-host"): 1,
            ("pick", "go"): 1,
            ("per-host", "go"): 2,
            ("go", "end"): 3,
        }
    )


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("off", None),  # the noop branch: nothing added, the deferred node stays in place
        ("other", "'if: mode' value 'other' matches none of: fast, off, and there is no default"),
    ],
)
async def test_deferred_conditional_noop_and_no_match(mode: str, fragment: str | None) -> None:
    chain = await chain_of(COND_LATE, "r", {"hosts": []})
    values = runtime(chain)
    values.apply_outputs(one(chain, "decide"), {"mode": mode})
    pick = one(chain, "pick")
    if fragment is None:
        assert await run_expand(chain, values, pick.id) == []
        assert (pick.id, one(chain, "end").id) in chain.edges
    else:
        with pytest.raises(BuildError) as info:
            await expand(chain, pick.id, values, FakeFactory())
        assert fragment in info.value.message


LOOP = """
sequences:
  r:
    request: true
    nodes:
      round:
        category: sequence
        type: loop
  loop:
    nodes:
      check:
        category: job
        type: t
        sets: [again]
      more:
        category: conditional
        if: again
        eq: {"yes": loop, default: noop}
        deps: [check]
"""


async def test_recursion_through_deferred_conditionals_stops_at_max_depth() -> None:
    limits = Limits(max_depth=4)
    chain = await chain_of(LOOP, "r", {}, limits=limits)
    values = runtime(chain)
    rounds = 0
    with pytest.raises(BuildError) as info:
        while True:
            check = max(by_name(chain, "check"), key=lambda j: int(j.id[1:]))
            values.apply_outputs(check, {"again": "yes"})
            more = next(
                j for j in chain.jobs.values() if j.name == "more" and j.scope == check.scope
            )
            await run_expand(chain, values, more.id, limits=limits)
            rounds += 1
            assert rounds < 10, "max_depth did not stop the recursion"
    assert "sequences nest deeper than 4 (does 'loop' call itself through a conditional?)" in str(
        info.value
    )
    assert rounds == 3  # scopes at depth 1 (round) .. 4; the 4th expansion would make depth 5
    assert len(by_name(chain, "check")) == 4


async def test_expansion_create_outputs_reach_existing_scopes() -> None:
    chain = await chain_of(
        FANOUT, "r", {"csv": "a"}, {"t": {"outputs": lambda a: {"drained": a.get("host", "")}}}
    )
    values = runtime(chain)
    values.apply_outputs(one(chain, "split"), {"list": ["a", "b"]})
    factory = FakeFactory({"t": {"outputs": lambda a: {"drained": a.get("host", "")}}})
    patch = await expand(chain, one(chain, "drain").id, values, factory)
    # create() of the wait jobs set `drained`, lifted into the request's own scope
    assert ("s1", "drained", "b") in patch.vars_set
    chain.apply(patch)
    values.apply_patch(patch)
    assert values.job_args(one(chain, "report")) == {"last": "b"}


async def test_expand_refuses_a_job_that_is_not_deferred() -> None:
    chain = await chain_of(FANOUT, "r", {"csv": "a"})
    with pytest.raises(BuildError, match="is not a deferred node"):
        await expand(chain, one(chain, "split").id, runtime(chain), FakeFactory())


async def test_a_stored_chain_expands_like_the_original() -> None:
    chain = await chain_of(FANOUT, "r", {"csv": "a"})
    stored = msgspec.json.decode(msgspec.json.encode(chain), type=Chain)
    assert stored == chain
    patches = []
    for c in (chain, stored):
        values = runtime(c)
        values.apply_outputs(one(c, "split"), {"list": ["a", "b"]})
        patches.append(await expand(c, one(c, "drain").id, values, FakeFactory()))
    assert patches[0] == patches[1]


# ---- a property: deferring and expanding gives the chain a direct build would


def contracted(chain: Chain) -> tuple[Counter[str], Counter[tuple[str, str]], list[str]]:
    """Names, name-edges and sorted args of a chain with its (spent) deferred nodes cut out."""
    gone = {j for j, job in chain.jobs.items() if job.kind == JobKind.DEFERRED}
    edges = set(chain.edges)
    for d in gone:
        ins = [a for a, b in edges if b == d]
        outs = [b for a, b in edges if a == d]
        edges = {(a, b) for a, b in edges if d not in (a, b)}
        edges |= {(a, b) for a in ins for b in outs}
    names = Counter(j.name for j in chain.jobs.values() if j.id not in gone)
    pairs = Counter((chain.jobs[a].name, chain.jobs[b].name) for a, b in edges)
    args = sorted(
        json.dumps(j.args, sort_keys=True) for j in chain.jobs.values() if j.id not in gone
    )
    return names, pairs, args


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hosts=st.lists(st.text("abc", min_size=1, max_size=3), max_size=6),
    width=st.integers(1, 4),
)
async def test_expanding_late_equals_building_early(hosts: list[str], width: int) -> None:
    early = await chain_of(
        FANOUT, "r", {"csv": "x", "width": str(width)}, {"splitter": {"outputs": {"list": hosts}}}
    )
    assert all(j.kind == JobKind.JOB for j in early.jobs.values())
    late = await chain_of(FANOUT, "r", {"csv": "x", "width": str(width)})
    values = runtime(late)
    values.apply_outputs(one(late, "split"), {"list": hosts})
    await run_expand(late, values, one(late, "drain").id)
    assert contracted(late) == contracted(early)
    assert [(g.parallel, len(g.copies)) for g in late.groups.values()] == [
        (g.parallel, len(g.copies)) for g in early.groups.values()
    ]
