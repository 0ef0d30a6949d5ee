"""Graph and arg-flow checks, and checks across sequences, as tables of small specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.lint import format_report, lint
from daemon.lint_graph import consumed, cycle_path, cyclic_components, outputs, strongly_connected
from daemon.spec import NodeArg, NodeSet, NodeSpec
from daemon.specload import SpecSet, load_paths


def load_inline(tmp_path: Path, text: str) -> SpecSet:
    path = tmp_path / "inline.yaml"
    path.write_text(text)
    return load_paths([path])


@pytest.mark.parametrize(
    ("graph", "components"),
    [
        ({}, []),
        ({"a": []}, [["a"]]),
        ({"a": ["b"], "b": []}, [["b"], ["a"]]),
        ({"a": ["b"], "b": ["a"]}, [["a", "b"]]),
        ({"a": ["a"]}, [["a"]]),
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c"], ["d"]]),
        ({"a": ["ghost"]}, [["a"]]),
        ({"x": ["y"], "y": ["z"], "z": ["y"]}, [["y", "z"], ["x"]]),
    ],
)
def test_strongly_connected(graph: dict[str, list[str]], components: list[list[str]]) -> None:
    assert strongly_connected(graph) == components


def test_strongly_connected_is_not_recursive() -> None:
    n = 20_000
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(n)}
    chain[f"n{n}"] = ["n0"]
    assert [len(c) for c in strongly_connected(chain)] == [n + 1]


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({"a": ["b"], "b": []}, []),
        ({"a": ["a"], "b": []}, [["a"]]),
        ({"a": ["b"], "b": ["a"], "c": ["a"]}, [["a", "b"]]),
    ],
)
def test_cyclic_components(graph: dict[str, list[str]], cycles: list[list[str]]) -> None:
    assert cyclic_components(graph) == cycles


@pytest.mark.parametrize(
    ("graph", "members", "start", "ring"),
    [
        ({"a": ["a"]}, ["a"], "a", ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b"], "a", ["a", "b", "a"]),
        ({"a": ["b", "c"], "b": ["c"], "c": ["a"]}, ["a", "b", "c"], "a", ["a", "c", "a"]),
    ],
)
def test_cycle_path(
    graph: dict[str, list[str]], members: list[str], start: str, ring: list[str]
) -> None:
    assert cycle_path(graph, members, start) == ring


def test_consumed_and_outputs_name_their_fields() -> None:
    node = NodeSpec(
        name="n",
        category="conditional",
        if_="mode",
        each=["hosts:host", "bad"],
        parallel="limit",
        args=[NodeArg(expected="host"), NodeArg(expected="x", given="y"), None, NodeArg()],
        sets=[NodeSet(arg="a"), NodeSet(arg="b", as_="c"), None, NodeSet(as_="z")],
    )
    assert consumed(node) == [
        ("y", ("args", 1, "given")),
        ("hosts", ("each", 0)),
        ("mode", ("if",)),
        ("limit", ("parallel",)),
    ]
    assert outputs(node) == [("a", ("sets", 0)), ("c", ("sets", 1))]


J = "category: job, type: noop"

# (title, spec text, expected {(check, sequence, node)} among errors and warnings)
SCENARIOS: list[tuple[str, str, set[tuple[str, str, str | None]]]] = [
    (
        "an arg set on one side of a diamond is not visible past the other side",
        f"""
sequences:
  s:
    nodes:
      a: {{{J}}}
      b: {{{J}, deps: [a], sets: [x]}}
      c: {{{J}, deps: [a]}}
      d: {{{J}, deps: [c], args: [x]}}
""",
        {("arg-not-set", "s", "d")},
    ),
    (
        "an arg set by a strict ancestor through several hops is visible",
        f"""
sequences:
  s:
    nodes:
      a: {{{J}, sets: [x]}}
      b: {{{J}, deps: [a]}}
      c: {{{J}, deps: [a]}}
      d: {{{J}, deps: [b, c], args: [x]}}
""",
        set(),
    ),
    (
        "a sequence node makes only its own sets visible",
        f"""
sequences:
  inner:
    nodes:
      j: {{{J}, sets: [x, y]}}
  s:
    nodes:
      call: {{category: sequence, type: inner, sets: [x]}}
      use-x: {{{J}, deps: [call], args: [x]}}
      use-y: {{{J}, deps: [call], args: [y]}}
""",
        {("arg-not-set", "s", "use-y")},
    ),
    (
        "renamed args: given names are looked up, sets by their as name",
        f"""
sequences:
  s:
    args:
      required: [{{name: h}}]
    nodes:
      a: {{{J}, args: [{{expected: host, given: h}}], sets: [{{arg: out, as: result}}]}}
      b: {{{J}, deps: [a], args: [{{expected: out, given: result}}]}}
      c: {{{J}, deps: [a], args: [out]}}
""",
        {("arg-not-set", "s", "c")},
    ),
    (
        "each lists, if and parallel names are consumed; each elements are not",
        f"""
sequences:
  s:
    args:
      static: [{{name: limit, default: "2"}}]
    nodes:
      a: {{{J}, sets: [hosts]}}
      b: {{{J}, deps: [a], each: [hosts:host], parallel: limit, args: [{{expected: h, given: host}}]
         }}
      c: {{{J}, each: ["hosts:host"], parallel: width}}
      d: {{category: conditional, if: mode, eq: {{default: noop}}, deps: [a]}}
""",
        {("arg-not-set", "s", "c"), ("arg-not-set", "s", "d")},
    ),
    (
        "a node cannot use what it sets itself",
        f"""
sequences:
  s:
    nodes:
      a: {{{J}, sets: [x], args: [x]}}
""",
        {("arg-not-set", "s", "a")},
    ),
    (
        "a dep cycle stops the arg-flow check of that sequence only",
        f"""
sequences:
  s:
    nodes:
      a: {{{J}}}
      b: {{{J}, deps: [c], args: [nowhere]}}
      c: {{{J}, deps: [b]}}
  t:
    nodes:
      a: {{{J}, args: [nowhere]}}
""",
        {("dep-cycle", "s", "b"), ("arg-not-set", "t", "a")},
    ),
    (
        "an unknown dep stops the arg-flow check",
        f"""
sequences:
  s:
    nodes:
      a: {{{J}}}
      b: {{{J}, deps: [a, z], args: [nowhere]}}
""",
        {("unknown-dep", "s", "b")},
    ),
    (
        "set-but-unused is reported only for requests, and not when used",
        f"""
sequences:
  r:
    request: true
    nodes:
      a: {{{J}, sets: [used, unused]}}
      b: {{{J}, deps: [a], args: [used]}}
  s:
    nodes:
      a: {{{J}, sets: [unused]}}
""",
        {("unused-set", "r", "a")},
    ),
    (
        "a request that another sequence calls may have its sets lifted: not unused",
        f"""
sequences:
  r:
    request: true
    nodes:
      a: {{{J}, sets: [x]}}
  s:
    nodes:
      call: {{category: sequence, type: r, sets: [x]}}
""",
        set(),
    ),
    (
        "two setters of one arg, or a setter of a sequence arg, is a sequence-level warning",
        f"""
sequences:
  s:
    args:
      required: [{{name: host}}]
    nodes:
      a: {{{J}, sets: [x, host]}}
      b: {{{J}, sets: [x]}}
""",
        {("duplicate-set", "s", None)},
    ),
    (
        "a conditional's sets must be set by every branch; noop sets nothing",
        f"""
sequences:
  t:
    nodes:
      j: {{{J}, sets: [x, y]}}
  s:
    args:
      required: [{{name: mode}}]
    nodes:
      all: {{category: conditional, if: mode, eq: {{a: t, default: t}}, sets: [x]}}
      some: {{category: conditional, if: mode, eq: {{a: t, default: noop}}, sets: [y]}}
""",
        {("missing-sets", "s", "some")},
    ),
    (
        "a conditional must pass the required args of every branch",
        f"""
sequences:
  t:
    args:
      required: [{{name: host}}]
    nodes:
      j: {{{J}, args: [host]}}
  u:
    nodes:
      j: {{{J}}}
  s:
    args:
      required: [{{name: mode}}, {{name: host}}]
    nodes:
      bad: {{category: conditional, if: mode, eq: {{a: t, default: u}}}}
      good: {{category: conditional, if: mode, eq: {{a: t, default: u}}, args: [host]}}
""",
        {("missing-required-arg", "s", "bad")},
    ),
    (
        "noop is a built-in sequence: no args, sets nothing",
        """
sequences:
  s:
    nodes:
      a: {category: sequence, type: noop}
      b: {category: sequence, type: noop, sets: [x], deps: [a]}
""",
        {("missing-sets", "s", "b")},
    ),
    (
        "a spec may define its own noop",
        f"""
sequences:
  noop:
    nodes:
      j: {{{J}, sets: [x]}}
  s:
    nodes:
      a: {{category: sequence, type: noop, sets: [x]}}
""",
        set(),
    ),
    (
        "sequences including themselves through a conditional branch",
        f"""
sequences:
  one:
    args:
      static: [{{name: m, default: "1"}}]
    nodes:
      a: {{category: conditional, if: m, eq: {{"1": two, "2": noop}}}}
  two:
    nodes:
      a: {{category: sequence, type: one}}
  outside:
    nodes:
      a: {{category: sequence, type: two}}
      b: {{{J}}}
""",
        {
            ("sequence-cycle", "one", "a"),
            ("sequence-cycle", "two", "a"),
            ("subsequence-failed", "outside", "a"),
        },
    ),
    (
        "a failure propagates to every caller, transitively",
        f"""
sequences:
  broken:
    nodes:
      a: {{{J}, deps: [a]}}
  middle:
    nodes:
      a: {{category: sequence, type: broken}}
  top:
    nodes:
      a: {{category: sequence, type: middle}}
  fine:
    nodes:
      a: {{{J}}}
""",
        {
            ("dep-cycle", "broken", "a"),
            ("no-start-node", "broken", None),
            ("subsequence-failed", "middle", "a"),
            ("subsequence-failed", "top", "a"),
        },
    ),
    (
        "passed args are checked against the union of the branches",
        f"""
sequences:
  t:
    args:
      required: [{{name: a}}]
    nodes:
      j: {{{J}, args: [a]}}
  u:
    args:
      optional: [{{name: b, default: x}}]
    nodes:
      j: {{{J}, args: [b]}}
  s:
    args:
      required: [{{name: mode}}, {{name: a}}, {{name: b}}, {{name: c}}, {{name: bs}}]
    nodes:
      n: {{category: conditional, if: mode, eq: {{x: t, default: u}}, args: [a, b, c]}}
      m: {{category: sequence, type: u, each: ["bs:b"]}}
""",
        {("extra-arg", "s", "n"), ("each-element-not-required", "s", "m")},
    ),
    (
        "templates may name args and each elements, nothing else",
        """
sequences:
  s:
    args:
      required: [{name: hosts}, {name: user}]
    nodes:
      a:
        category: job
        type: noop
        each: ["hosts:host"]
        args: [{expected: login, given: user}]
        with: {x: ["{{host}}", "{{ login }}", {deep: "{{user}}"}]}
""",
        {("unknown-template-arg", "s", "a")},
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_scenarios(tmp_path: Path, text: str, expected: set[tuple[str, str, str | None]]) -> None:
    diags = lint(load_inline(tmp_path, text))
    assert {(d.check, d.sequence, d.node) for d in diags} == expected, format_report(diags)


def test_arg_not_set_names_the_arg_and_a_setter_to_depend_on(tmp_path: Path) -> None:
    text = f"""
sequences:
  s:
    nodes:
      early: {{{J}, sets: [x]}}
      late: {{{J}, args: [x]}}
"""
    (d,) = lint(load_inline(tmp_path, text))
    assert d.check == "arg-not-set"
    assert "arg x" in d.message
    assert "early sets it: add it to deps" in d.message


def test_dep_cycle_names_every_node_on_it(tmp_path: Path) -> None:
    text = f"""
sequences:
  s:
    nodes:
      start: {{{J}}}
      a: {{{J}, deps: [start, c]}}
      b: {{{J}, deps: [a]}}
      c: {{{J}, deps: [b, d]}}
      d: {{{J}, deps: [c]}}
"""
    (d,) = lint(load_inline(tmp_path, text))
    assert d.check == "dep-cycle"
    assert d.node == "a"
    assert "a -> c -> b -> a" in d.message
    assert "also in the cycle: d" in d.message


def test_sequence_cycle_names_the_path(tmp_path: Path) -> None:
    text = """
sequences:
  x:
    nodes:
      n: {category: sequence, type: y}
  y:
    nodes:
      n: {category: sequence, type: x}
"""
    msgs = sorted(d.message for d in lint(load_inline(tmp_path, text)))
    assert msgs == [
        "sequence x includes itself: x -> y -> x",
        "sequence y includes itself: y -> x -> y",
    ]
