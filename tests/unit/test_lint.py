"""The linter as a whole: one broken spec per check, the shipped specs, robustness."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.diagnostics import Diagnostic, Severity
from daemon.duration import DurationError, parse_duration
from daemon.jobs import JobFactory
from daemon.jobs.template import names as template_names
from daemon.lint import JobTypeLookup, format_report, lint
from daemon.lint_calls import _TEMPLATE
from daemon.spec import ACL, NodeArg, NodeSet, NodeSpec, SeqArg, SeqArgs, SequenceSpec
from daemon.specload import SpecSet, load_dir, load_paths

HERE = Path(__file__).parent
CASES_DIR = HERE / "lint_cases"
CASE_FILES = sorted(CASES_DIR.glob("*.yaml"))
REPO = HERE.parents[1]
EXPECT = re.compile(r"^# expect: (\S+) (\d+):(\d+)\s*$", re.MULTILINE)


def _check_sleep(with_: Mapping[str, Any]) -> list[str]:
    value = with_.get("duration")
    if not isinstance(value, str) or "{{" in value:
        return []
    try:
        parse_duration(value)
    except DurationError as exc:
        return [f"duration: {exc}"]
    return []


class TableJobTypes:
    """A job-type lookup backed by a table: type -> (known with keys, required keys)."""

    TABLE: ClassVar[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
        "shell": (frozenset({"cmd", "env", "cwd", "timeout", "stdin"}), frozenset({"cmd"})),
        "sleep": (frozenset({"duration"}), frozenset({"duration"})),
        "noop": (frozenset(), frozenset()),
        "http": (
            frozenset({"url", "method", "headers", "body", "timeout", "expect"}),
            frozenset({"url"}),
        ),
    }
    CHECKS: ClassVar[dict[str, Callable[[Mapping[str, Any]], list[str]]]] = {"sleep": _check_sleep}

    def params(self, type_name: str) -> frozenset[str] | None:
        entry = self.TABLE.get(type_name)
        return None if entry is None else entry[0]

    def required_params(self, type_name: str) -> frozenset[str]:
        entry = self.TABLE.get(type_name)
        return frozenset() if entry is None else entry[1]

    def known_types(self) -> list[str]:
        return list(self.TABLE)

    def check_with(self, type_name: str, with_: Mapping[str, Any]) -> list[str]:
        check = self.CHECKS.get(type_name)
        return [] if check is None else check(with_)


def load_inline(tmp_path: Path, text: str, name: str = "inline.yaml") -> SpecSet:
    path = tmp_path / name
    path.write_text(text)
    return load_paths([path])


def expectations(path: Path) -> set[tuple[str, int, int]]:
    return {(c, int(line), int(col)) for c, line, col in EXPECT.findall(path.read_text())}


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_lint_case_reports_exactly_its_findings(path: Path) -> None:
    """Each file's `# expect:` lines list every finding; `valid-*` files expect none."""
    diags = lint(load_paths([path]), TableJobTypes())
    got = {(d.check, d.line, d.col) for d in diags}
    assert got == expectations(path), format_report(diags)
    assert all(d.file == str(path) and d.message for d in diags)


def test_every_check_case_file_expects_its_own_check() -> None:
    for path in CASE_FILES:
        checks = {c for c, _, _ in expectations(path)}
        if path.stem.startswith("valid-"):
            assert not checks, path
        else:
            assert path.stem in checks, path


@pytest.mark.parametrize("lookup", [TableJobTypes(), JobFactory()], ids=["table", "registry"])
def test_shipped_specs_lint_without_errors(lookup: JobTypeLookup) -> None:
    specs_dir = REPO / "specs"
    specs = load_dir(specs_dir)
    diags = lint(specs, lookup)
    assert [d.format() for d in diags if d.is_error] == []
    if any(specs_dir.glob("*.y*ml")):
        assert specs.sequences, "the shipped specs define no sequence"


def test_lint_includes_loader_findings_and_sorts(tmp_path: Path) -> None:
    specs = load_inline(
        tmp_path,
        "sequences:\n"
        "  s:\n"
        "    nodes:\n"
        "      b: {category: job, type: noop, bogus: 1}\n"
        "      a: {category: jobb, type: noop}\n"
        "      c: {category: job, type: noop, retry: many}\n",
    )
    diags = lint(specs)
    assert [(d.check, d.line) for d in diags] == [
        ("unknown-field", 4),
        ("unknown-category", 5),
        ("type", 6),
    ]
    assert diags == sorted(diags, key=lambda d: (d.file, d.line, d.col, d.message))


def test_job_types_are_checked_only_when_given(tmp_path: Path) -> None:
    text = "sequences:\n  s:\n    nodes:\n      a: {category: job, type: rocket, with: {x: 1}}\n"
    specs = load_inline(tmp_path, text)
    assert lint(specs) == []
    assert [d.check for d in lint(specs, TableJobTypes())] == ["unknown-job-type"]


@pytest.mark.parametrize(
    ("text", "check", "hint"),
    [
        (
            "sequences:\n  s:\n    nodes:\n      a: {category: sequence, type: shell}\n",
            "unknown-sequence",
            "did you mean category: job?",
        ),
        (
            "sequences:\n  t:\n    nodes:\n      a: {category: job, type: noop}\n"
            "  s:\n    nodes:\n      a: {category: job, type: t}\n",
            "unknown-job-type",
            "did you mean category: sequence?",
        ),
        (
            "sequences:\n  s:\n    nodes:\n      a: {category: job, type: shell,"
            " with: {cmd: [x], cmnd: y}}\n",
            "unknown-with-key",
            "did you mean 'cmd'?",
        ),
        (
            "sequences:\n  s:\n    nodes:\n      a: {category: job, type: shel}\n",
            "unknown-job-type",
            "did you mean 'shell'?",
        ),
        (
            "sequences:\n  s:\n    nodes:\n      a: {category: job, type: noop, deps: [bb]}\n"
            "      b: {category: job, type: noop}\n",
            "unknown-dep",
            "did you mean 'b'?",
        ),
        (
            "sequences:\n  s:\n    nodes:\n      a: {category: conditionl, type: noop}\n",
            "unknown-category",
            "did you mean 'conditional'?",
        ),
    ],
)
def test_hints(tmp_path: Path, text: str, check: str, hint: str) -> None:
    diags = [d for d in lint(load_inline(tmp_path, text), TableJobTypes()) if d.check == check]
    assert len(diags) == 1
    assert hint in diags[0].message


def test_undecodable_sequence_fields_cause_no_cascade(tmp_path: Path) -> None:
    """A sequence whose args failed to load: no arg-flow or required-arg noise."""
    specs = load_inline(
        tmp_path,
        "sequences:\n"
        "  s:\n"
        "    args: [host]\n"
        "    nodes:\n"
        "      a: {category: job, type: noop, args: [host]}\n"
        "  caller:\n"
        "    nodes:\n"
        "      c: {category: sequence, type: s}\n",
    )
    assert [d.check for d in lint(specs)] == ["type"]


def test_undecodable_node_causes_no_cascade(tmp_path: Path) -> None:
    specs = load_inline(
        tmp_path,
        "sequences:\n"
        "  s:\n"
        "    request: true\n"
        "    nodes:\n"
        "      a: {category: job, type: noop, retry: lots, sets: [x]}\n"
        "      b: {category: job, type: noop, args: [x], deps: [a]}\n",
    )
    assert [d.check for d in lint(specs)] == ["type"]


def test_format_report() -> None:
    d = Diagnostic(
        severity=Severity.ERROR,
        message="sequence has no nodes",
        check="no-nodes",
        file="a.yaml",
        line=3,
        col=3,
        sequence="s",
    )
    w = msgspec.structs.replace(d, severity=Severity.WARNING, line=4, message="hm", node="n")
    assert format_report([d, w]) == (
        "a.yaml:3:3: error: sequence has no nodes (sequence s)\n"
        "a.yaml:4:3: warning: hm (sequence s, node n)\n"
        "1 error, 1 warning"
    )
    assert format_report([]) == "no problems found"


@pytest.mark.parametrize(
    "text",
    ["{{a}}", "x {{ a }} {{b}}", "{{.Names}}", "{{ a b }}", "{{}}", "{{{a}}}", "{a}", "{{a-b.c}}"],
)
def test_template_syntax_matches_the_renderer(text: str) -> None:
    assert {m.group(1) for m in _TEMPLATE.finditer(text)} == template_names(text)


def test_hand_built_garbage_never_raises() -> None:
    """Shapes no loader makes (wrong types inside Structs) end as `internal` errors at worst."""
    bad_node: Any = NodeSpec(name="n", category="job", type="noop", each=None)  # type: ignore[arg-type]
    weird: Any = {
        "none-node": SequenceSpec(name="none-node", nodes={"a": None, "b": None}),
        "garbage": SequenceSpec(name="garbage", nodes={"n": bad_node}),
        "loop": SequenceSpec(
            name="loop",
            args=SeqArgs(required=[None, SeqArg()], static=[SeqArg(name="x")]),
            # `ops` is a list; garbage in it that the type allows: an unknown op, an empty one,
            # and ops next to `admin: true`
            acl=[None, ACL(role="r", admin=True, ops=["start", "strat", ""])],
            nodes={
                "a": NodeSpec(
                    name="a",
                    category="sequence",
                    type="loop",
                    args=[None, NodeArg(given="g")],
                    sets=[None, NodeSet(as_="q")],
                    deps=["a"],
                )
            },
        ),
    }
    weird["not-a-sequence"] = "oops"
    specs = SpecSet(sequences=weird)
    diags = lint(specs, TableJobTypes())
    assert all(d.line >= 1 for d in diags)
    assert {d.sequence for d in diags if d.check == "internal"} == {"garbage", "not-a-sequence"}
    checks = {d.check for d in diags}
    assert {"sequence-cycle", "dep-cycle", "null-entry", "acl-bad-op"} <= checks
    assert "acl-admin-and-ops" in checks
    bad_ops = sorted(d.message for d in diags if d.check == "acl-bad-op")
    assert len(bad_ops) == 2 and "'strat'" in bad_ops[1] and "''" in bad_ops[0], bad_ops


# --- never raises: random mutations of the case files -------------------------------------

_SEEDS = [yaml.safe_load(p.read_text()) for p in CASE_FILES]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["", "s", "t", "noop", "a", "x", "job", "conditional", "sequence", "1s"]),
    st.sampled_from(["a:b", "x:y:z", "{{x}}", "{{ y }}", "-1", "0", "shell", "deps", "nodes"]),
    st.text(max_size=6),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "x", "name", "arg", "expected", "as"]), inner),
    ),
    max_leaves=6,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _mutate(tree: Any, path: tuple[Any, ...], action: str, value: Any, donor: Any) -> Any:
    if not path:
        return value if action == "replace" else tree
    parent = tree
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    else:  # graft a piece of another case file here
        parent[last] = donor
    return tree


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_lint_never_raises_on_mutated_specs(data: st.DataObject, tmp_path: Path) -> None:
    tree = yaml.safe_load(yaml.safe_dump(data.draw(st.sampled_from(_SEEDS))))
    for _ in range(data.draw(st.integers(1, 4))):
        paths = _paths(tree)
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["delete", "replace", "graft"]))
        donor_tree = data.draw(st.sampled_from(_SEEDS))
        donor_path = data.draw(st.sampled_from(_paths(donor_tree)))
        donor: Any = donor_tree
        for p in donor_path:
            donor = donor[p]
        donor = yaml.safe_load(yaml.safe_dump(donor))
        tree = _mutate(tree, path, action, data.draw(_VALUES), donor)
    text = yaml.safe_dump(tree, sort_keys=False)
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(text)))
        insert = data.draw(st.sampled_from(["", ":", "- ", "\n  ", "{", "&a *a"]))
        text = text[:cut] + insert + text[cut:]
    specs = load_inline(tmp_path, text, "mutant.yaml")
    diags = lint(specs, TableJobTypes())
    assert all(d.line >= 1 and d.col >= 1 for d in diags), format_report(diags)
    assert not [d for d in diags if d.check == "internal"], format_report(diags)
    assert diags == sorted(diags, key=lambda d: (d.file, d.line, d.col, d.message))
