"""Bad specs: generated spec trees, mutations of the shipped specs, YAML hazards, expansion bombs.

The linter never raises and places every finding (line >= 1); the builder raises nothing but
BuildError on specs that lint clean; hazards (alias bombs, huge files, deep nesting, non-UTF-8,
tabs, NUL) are a clear error within a memory and CPU limit; `each` bombs stop at the configured
limits, in the builder and in a real daemon.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from daemon.builder import build
from daemon.errors import BuildError
from daemon.jobs.registry import JobFactory
from daemon.lint import lint
from daemon.spec import SequenceSpec
from daemon.specload import MAX_DEPTH, SpecSet, load_text
from tests.e2e.harness import eventually
from tests.reliability.conftest import Spawn

REPO = Path(__file__).resolve().parents[2]
FACTORY = JobFactory()
#: generated examples per property (RELIABILITY_EXAMPLES for a longer run)
EXAMPLES = int(os.environ.get("RELIABILITY_EXAMPLES", "120"))
pytestmark = pytest.mark.timeout(120 + EXAMPLES // 5)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

# ---- generated spec trees

NODE_NAMES = st.sampled_from(["a", "b", "c", "d"])
ARG_NAMES = st.sampled_from(["x", "y", "hosts", "h", "n"])
SEQ_NAMES = st.sampled_from(["r1", "r2", "s1", "s2", "noop"])
TEXTS = st.one_of(
    st.sampled_from(["", "1", "0", "-1", "2s", "100ms", "x", "{{x}}", "true", "null", "a:b"]),
    st.text(max_size=5),
)
ARG_REF = st.one_of(
    ARG_NAMES,
    st.fixed_dictionaries({"expected": ARG_NAMES}, optional={"given": ARG_NAMES}),
)
NODE = st.fixed_dictionaries(
    {"category": st.sampled_from(["job", "job", "sequence", "conditional", "bogus"])},
    optional={
        "type": st.sampled_from(["noop", "shell", "sleep", "s1", "s2", "r1", "nope"]),
        "deps": st.one_of(NODE_NAMES, st.lists(NODE_NAMES, max_size=3)),
        "args": st.lists(ARG_REF, max_size=3),
        "sets": st.lists(
            st.one_of(
                ARG_NAMES, st.fixed_dictionaries({"arg": ARG_NAMES}, optional={"as": ARG_NAMES})
            ),
            max_size=2,
        ),
        "each": st.lists(st.builds("{}:{}".format, ARG_NAMES, ARG_NAMES), max_size=2),
        "parallel": st.one_of(st.integers(-1, 3), ARG_NAMES, TEXTS),
        "retry": st.one_of(st.integers(-1, 3), TEXTS),
        "retryWait": TEXTS,
        "timeout": TEXTS,
        "if": ARG_NAMES,
        "eq": st.dictionaries(st.sampled_from(["yes", "no", "default", "1"]), SEQ_NAMES),
        "with": st.fixed_dictionaries(
            {},
            optional={
                "cmd": st.one_of(st.sampled_from(["true", ""]), st.lists(TEXTS, max_size=2)),
                "duration": TEXTS,
            },
        ),
        "onInterrupt": st.sampled_from(["rerun", "fail", "hold", "bogus"]),
    },
)
ARG_DEFS = st.fixed_dictionaries(
    {},
    optional={
        "required": st.lists(st.fixed_dictionaries({"name": ARG_NAMES}), max_size=2),
        "optional": st.lists(
            st.fixed_dictionaries({"name": ARG_NAMES}, optional={"default": TEXTS}), max_size=2
        ),
        "static": st.lists(
            st.fixed_dictionaries({"name": ARG_NAMES}, optional={"default": TEXTS}), max_size=1
        ),
    },
)
SEQUENCE = st.fixed_dictionaries(
    {"nodes": st.dictionaries(NODE_NAMES, NODE, max_size=4)},
    optional={
        "request": st.booleans(),
        "args": ARG_DEFS,
        "failFast": st.booleans(),
        "timeout": TEXTS,
        "acl": st.lists(st.fixed_dictionaries({"role": TEXTS, "ops": st.lists(TEXTS)}), max_size=1),
    },
)
WILD = st.fixed_dictionaries({"sequences": st.dictionaries(SEQ_NAMES, SEQUENCE, max_size=3)})


@st.composite
def coherent(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid trees: deps only on earlier nodes, args that exist, lists to `each` over,
    outputs set at run time (deferred nodes), calls of a helper sequence and conditionals."""
    nodes: dict[str, Any] = {}
    names = ["a", "b", "c", "d", "e"][: draw(st.integers(1, 5))]
    for i, name in enumerate(names):
        kind = draw(st.sampled_from(["job", "job", "sequence", "conditional"]))
        node: dict[str, Any] = {"category": kind, "args": ["x"]}
        if kind == "job":
            node["type"] = draw(st.sampled_from(["noop", "sleep", "shell"]))
            node["with"] = {"noop": {}, "sleep": {"duration": "1ms"}, "shell": {"cmd": "true"}}[
                node["type"]
            ]
            if draw(st.booleans()):
                node["sets"] = [{"arg": "out", "as": f"out_{name}"}]
        elif kind == "sequence":
            node["type"] = "helper"
        else:
            node["if"] = "x"
            node["eq"] = {"x": "helper", "default": "noop"}
        earlier = names[:i]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2)) if earlier else []
        if deps:
            node["deps"] = deps
        sources = ["hosts"] + [f"out_{n}" for n in deps if "sets" in nodes[n]]
        if kind != "conditional" and draw(st.integers(0, 2)) == 0:
            node["each"] = [f"{draw(st.sampled_from(sources))}:h"]
            if kind == "sequence":
                node["type"] = "helper-each"
            if draw(st.booleans()):
                node["parallel"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            node["retry"] = draw(st.integers(1, 2))
            node["retryWait"] = "10ms"
        nodes[name] = node
    return {
        "sequences": {
            "r1": {
                "request": True,
                "args": {"required": [{"name": "x"}, {"name": "hosts"}]},
                "nodes": nodes,
            },
            "helper": {
                "args": {"required": [{"name": "x"}]},
                "nodes": {"one": {"category": "job", "type": "noop", "args": ["x"]}},
            },
            "helper-each": {
                "args": {"required": [{"name": "x"}, {"name": "h"}]},
                "nodes": {"one": {"category": "job", "type": "noop", "args": ["x", "h"]}},
            },
        }
    }


TREE = st.one_of(WILD, coherent())


def _event(text: str) -> None:
    """A statistic for --hypothesis-show-statistics, when running under hypothesis."""
    if currently_in_test_context():
        event(text)


def _lint(text: str | bytes, name: str = "gen.yaml") -> tuple[SpecSet, list[Any]]:
    res = load_text(text, name)
    specs = SpecSet()
    specs.files.append(name)
    specs.positions[name] = res.positions
    specs.diagnostics.extend(res.diagnostics)
    specs.sequences.update(res.sequences)
    diags = lint(specs, FACTORY)
    bad = [d.format() for d in diags if d.line < 1 or d.col < 1 or d.check == "internal"]
    assert not bad, bad
    _event("lint: errors" if any(d.is_error for d in diags) else "lint: clean")
    return specs, diags


def _sample_args(seq: SequenceSpec, shape: int) -> dict[str, Any]:
    """Required args as text, as a list, or as a list that also makes a number of copies."""
    out: dict[str, Any] = {}
    for i, a in enumerate(x for x in seq.args.required if x is not None and x.name):
        kind = (shape + i) % 3
        out[a.name] = ["1", "2"] if kind == 1 or a.name == "hosts" else "2" if kind == 2 else "x"
    return out


async def _build_all(specs: SpecSet, shape: int) -> int:
    """Build every request type; only BuildError may come out. Returns how many built."""
    built = 0
    for name, seq in specs.sequences.items():
        if not seq.request:
            continue
        try:
            await build(specs.sequences, name, _sample_args(seq, shape), FACTORY)
            built += 1
            _event("build: chain")
        except BuildError as exc:
            assert exc.message, name
            _event("build: BuildError")
    return built


@SETTINGS
@given(tree=TREE, shape=st.integers(0, 2))
def test_generated_specs_lint_and_build(tree: dict[str, Any], shape: int) -> None:
    specs, diags = _lint(yaml.safe_dump(tree, sort_keys=False))
    if not any(d.is_error for d in diags):
        asyncio.run(_build_all(specs, shape))


# ---- mutations of the shipped specs

SHIPPED = {p.name: p.read_text() for p in sorted((REPO / "specs").glob("*.yaml"))}
INSERTS = ["\t", ":", "- ", "  ", "\n", "{", "}", "[", "&a ", "*a", "'", '"', "#", "\0", "é", "~"]


def _mutate_text(text: str, data: st.DataObject) -> str:
    for _ in range(data.draw(st.integers(1, 3))):
        cut = data.draw(st.integers(0, len(text)))
        how = data.draw(st.sampled_from(["insert", "delete", "dup-line", "drop-line"]))
        if how == "insert":
            text = text[:cut] + data.draw(st.sampled_from(INSERTS)) + text[cut:]
        elif how == "delete":
            text = text[:cut] + text[cut + data.draw(st.integers(1, 12)) :]
        else:
            lines = text.splitlines(keepends=True)
            i = data.draw(st.integers(0, max(0, len(lines) - 1)))
            if lines:
                lines[i : i + 1] = [lines[i], lines[i]] if how == "dup-line" else []
            text = "".join(lines)
    return text


def _mutate_tree(tree: Any, data: st.DataObject) -> Any:
    node, parent, key = tree, None, None
    for _ in range(data.draw(st.integers(0, 6))):
        if isinstance(node, dict) and node:
            parent, key = node, data.draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            parent, key = node, data.draw(st.integers(0, len(node) - 1))
        else:
            break
        node = parent[key]
    if parent is None:
        return tree
    if data.draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = data.draw(st.one_of(TEXTS, st.integers(-2, 2), st.lists(TEXTS, max_size=2)))
    return tree


@SETTINGS
@given(data=st.data())
def test_shipped_spec_mutations(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(SHIPPED)))
    if data.draw(st.booleans()):
        text = _mutate_text(SHIPPED[name], data)
    else:
        text = yaml.safe_dump(_mutate_tree(yaml.safe_load(SHIPPED[name]), data), sort_keys=False)
    specs, diags = _lint(text, name)
    if not any(d.is_error for d in diags):
        asyncio.run(_build_all(specs, data.draw(st.integers(0, 2))))


# ---- YAML hazards, through `spind lint` in a process with a memory and CPU limit


def _alias_bomb() -> str:
    text = "sequences:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 10):
        text += f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n"
    return text


def _deep_block(levels: int) -> str:
    keys = "".join("  " * (i + 1) + f"k{i}:\n" for i in range(levels))
    return "sequences:\n" + keys + "  " * (levels + 1) + "v\n"


HAZARDS: dict[str, tuple[bytes, str]] = {
    "alias bomb": (_alias_bomb().encode(), "alias bomb"),
    "huge file": (b"# " + b"x" * (5 << 20) + b"\n", "the limit is"),
    "deep flow": (b"sequences: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nests deeper"),
    "deep block": (_deep_block(200).encode(), f"nests deeper than {MAX_DEPTH}"),
    "not utf-8": (b"sequences:\n  x: \xff\xfe\n", "not UTF-8"),
    "tabs": (b"sequences:\n\tx:\n\t\tnodes: {}\n", "'\\t'"),
    "nul": (b"sequences:\n  x: a\x00b\n", "not allowed"),
    "many keys": (
        ("sequences:\n" + "".join(f"  s{i}: {{nodes: {{}}}}\n" for i in range(20_000))).encode(),
        "",
    ),
}


def _limits() -> None:
    gib = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (gib, gib))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


@pytest.mark.parametrize("name", sorted(HAZARDS))
def test_yaml_hazards_are_bounded_clear_errors(tmp_path: Path, name: str) -> None:
    data, words = HAZARDS[name]
    path = tmp_path / "hazard.yaml"
    path.write_bytes(data)
    res = subprocess.run(
        [sys.executable, "-m", "daemon", "lint", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        preexec_fn=_limits,
        timeout=90,
    )
    out = res.stdout + res.stderr
    assert res.returncode in (0, 1), out[-2000:]  # killed by a limit would be negative
    assert "Traceback" not in out and "MemoryError" not in out, out[-2000:]
    if words:
        assert res.returncode == 1
        first = next(line for line in out.splitlines() if ": error: " in line)
        where = first.split(": error: ")[0]
        assert int(where.split(":")[-2]) >= 1 and int(where.split(":")[-1]) >= 1, first
        assert words in first, first


def test_daemon_reload_with_hazards_keeps_the_old_specs(spawn: Spawn) -> None:
    d = spawn()
    for name in ("alias bomb", "deep flow", "tabs"):
        (d.specs_dir / f"{name.replace(' ', '-')}.yaml").write_bytes(HAZARDS[name][0])
    d.signal(signal.SIGHUP)
    _status, health = eventually(
        lambda: (r := d.call("GET", "/api/v1/health"))[1].get("specsOk") is False and r
    )
    errors = "\n".join(health["specsErrors"])
    assert "alias-bomb.yaml" in errors and "deep-flow.yaml" in errors and "tabs.yaml" in errors
    status, types = d.call("GET", "/api/v1/request-list")
    assert status == 200 and "line" in {t["name"] for t in types}


# ---- expansion bombs


BOMBS = """
sequences:
  wide:
    request: true
    args:
      required: [{name: hosts}]
    nodes:
      w: {category: job, type: noop, each: ["hosts:h"]}
  square:
    request: true
    args:
      required: [{name: outer}, {name: inner}]
    nodes:
      fan: {category: sequence, type: inner-seq, each: ["outer:o"], args: [inner]}
  inner-seq:
    args:
      required: [{name: inner}, {name: o}]
    nodes:
      work: {category: job, type: noop, each: ["inner:i"]}
"""


@pytest.mark.parametrize(
    ("request_type", "args", "words"),
    [
        ("wide", {"hosts": [f"h{i}" for i in range(1_000_000)]}, "max_each_elements"),
        (
            "square",
            {"outer": [f"o{i}" for i in range(400)], "inner": [f"i{i}" for i in range(400)]},
            "max_jobs_per_request",
        ),
    ],
    ids=["each-million", "each-of-each"],
)
def test_expansion_bombs_hit_the_limits(
    request_type: str, args: dict[str, Any], words: str
) -> None:
    specs, diags = _lint(BOMBS)
    assert not any(d.is_error for d in diags), diags
    with pytest.raises(BuildError) as err:
        asyncio.run(build(specs.sequences, request_type, args, FACTORY))
    assert words in err.value.message


RUNTIME_BOMB = r"""
sequences:
  runtime-bomb:
    request: true
    args:
      required: [{name: count}]
    nodes:
      make-list:
        category: job
        type: shell
        args: [count]
        sets: [{arg: items, as: itemList}]
        with:
          cmd: |
            seq "$SPIND_ARG_count" | awk 'BEGIN { printf "items=[" }
              { printf "%s\"%s\"", (NR > 1 ? "," : ""), $0 } END { print "]" }' > "$SPIND_OUTPUT"
      fan:
        category: job
        type: noop
        each: ["itemList:item"]
        deps: [make-list]
"""


def test_a_deferred_each_bomb_fails_the_request_with_a_clear_error(spawn: Spawn) -> None:
    """The list exists only at run time (a job writes 110,000 items): the expansion hits
    max_each_elements, the request fails with that message, the daemon stays up."""
    d = spawn({"bomb.yaml": RUNTIME_BOMB})
    status, body = d.call(
        "POST", "/api/v1/requests", {"type": "runtime-bomb", "args": {"count": "110000"}}
    )
    assert status == 201, body
    req = d.wait_state(body["id"], timeout=60)
    assert req["state"] == "FAIL"
    rows = d.log_rows(body["id"])
    fan = next(r for r in rows if r["name"] == "fan")
    assert "max_each_elements" in fan["error"]
    assert d.call("GET", "/api/v1/health")[0] == 200
