"""Spin Cycle's spec checks (`kind: lint` cases and the `normalize` case) against our linter.

`parse` cases run our loader (Spin Cycle's parse stage); `check` cases run the whole linter on
a snippet and look for the finding of the Go check (mapped to our check name below), or for
its absence; `graph` cases lint graph-checks.yaml and look at which sequences have errors.
Our linter runs every stage at once, so other findings on these deliberately broken snippets
are expected and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.diagnostics import Diagnostic, Severity
from daemon.lint import format_report, lint
from daemon.specload import SpecSet, load_dir, load_paths
from tests.conformance.conftest import (
    SPINCYCLE_DIR,
    SPINCYCLE_SPECS,
    spincycle_available,
    spincycle_cases,
)

if not spincycle_available():
    pytest.skip(
        f"Spin Cycle conformance suite not found at {SPINCYCLE_DIR}", allow_module_level=True
    )

#: Spin Cycle's check -> the name of ours that finds the same thing.
GO_CHECKS: dict[str, str] = {
    "RequiredArgsNamedSequenceCheck": "arg-no-name",
    "OptionalArgsNamedSequenceCheck": "arg-no-name",
    "StaticArgsNamedSequenceCheck": "arg-no-name",
    "RequiredArgsHaveNoDefaultsSequenceCheck": "required-arg-default",
    "OptionalArgsHaveDefaultsSequenceCheck": "arg-no-default",
    "StaticArgsHaveDefaultsSequenceCheck": "arg-no-default",
    "NoDuplicateArgsSequenceCheck": "duplicate-arg",
    "HasNodesSequenceCheck": "no-nodes",
    "NodesSetsUniqueSequenceCheck": "duplicate-set",
    "ACLAdminXorOpsSequenceCheck": "acl-admin-and-ops",
    "ACLsHaveRolesSequenceCheck": "acl-no-role",
    "NoDuplicateACLRolesSequenceCheck": "acl-duplicate-role",
    "HasCategoryNodeCheck": "missing-category",
    "ValidCategoryNodeCheck": "unknown-category",
    "ValidEachNodeCheck": "bad-each",
    "EachElementUniqueNodeCheck": "duplicate-each-element",
    "EachNotRenamedTwiceNodeCheck": "each-renamed-twice",
    "ArgsNotNilNodeCheck": "null-arg",
    "ArgsAreNamedNodeCheck": "arg-no-expected",
    "ArgsExpectedUniqueNodeCheck": "duplicate-expected",
    "ArgsNotRenamedTwiceNodeCheck": "args-renamed-twice",
    "EachElementDoesNotDuplicateArgsExpectedNodeCheck": "each-element-is-arg",
    "EachListDoesNotDuplicateArgsGivenNodeCheck": "each-list-is-arg",
    "SetsNotNilNodeCheck": "null-set",
    "SetsAreNamedNodeCheck": "set-no-arg",
    "SetsAsUniqueNodeCheck": "duplicate-set-as",
    "SetsNotRenamedTwiceNodeCheck": "sets-renamed-twice",
    "EachIfParallelNodeCheck": "parallel-without-each",
    "ValidParallelNodeCheck": "bad-parallel",
    "ConditionalNoTypeNodeCheck": "conditional-with-type",
    "ConditionalHasIfNodeCheck": "conditional-without-if",
    "ConditionalHasEqNodeCheck": "conditional-without-eq",
    "NonconditionalHasTypeNodeCheck": "missing-type",
    "NonconditionalNoIfNodeCheck": "if-without-conditional",
    "NonconditionalNoEqNodeCheck": "eq-without-conditional",
    "RetryIfRetryWaitNodeCheck": "retry-wait-without-retry",
    "ValidRetryWaitNodeCheck": "bad-duration",
    "RequiredArgsProvidedNodeCheck": "missing-required-arg",
    "NoExtraSequenceArgsProvidedNodeCheck": "extra-arg",
    "SubsequencesExistNodeCheck": "unknown-sequence",
}

#: For `graph` cases: which of our checks explains the error each sequence must have.
GRAPH_CHECKS: dict[str, dict[str, str]] = {
    "graph-missing-sets": {"missing-sets": "missing-sets"},
    "graph-missing-sets-conditional": {"missing-sets-conditional": "missing-sets"},
    "graph-missing-job-args": {"missing-job-args": "arg-not-set"},
    "graph-circular-node-deps": {"circular-dependencies": "dep-cycle"},
    "graph-propagate": {
        "propagate-subsequence-1": "dep-cycle",
        "propagate": "unknown-sequence",
    },
    "graph-propagate-conditional": {
        "propagate-subsequence-1": "dep-cycle",
        "propagate-subsequence-2": "dep-cycle",
        "propagate-conditional": "subsequence-failed",
    },
    "graph-cyclical-sequences": {
        "circular-sequences-1": "sequence-cycle",
        "circular-sequences-2": "sequence-cycle",
        "circular-sequences-3": "sequence-cycle",
    },
}

#: For `parse` cases that expect a finding: the loader check that reports it.
PARSE_CHECKS: dict[str, str] = {
    "parse-type-mismatch": "type",
    "parse-duplicate-key-warns": "duplicate-key",
    "parse-dir-duplicate-sequence": "duplicate-sequence",
}

LINT = spincycle_cases("lint")
CHECK = [c for c in LINT if c["stage"] == "check"]
GRAPH = [c for c in LINT if c["stage"] == "graph"]
PARSE = [c for c in LINT if c["stage"] == "parse"]
NORMALIZE = spincycle_cases("normalize")


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["id"] for c in cases]


def _inline(tmp_path: Path, text: str) -> SpecSet:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_paths([path])


def test_every_lint_case_is_run() -> None:
    assert len(CHECK) + len(GRAPH) + len(PARSE) == len(LINT) > 0
    assert {c["check"] for c in CHECK} <= set(GO_CHECKS)
    assert set(_ids(GRAPH)) == set(GRAPH_CHECKS)


@pytest.mark.parametrize("case", CHECK, ids=_ids(CHECK))
def test_check(case: dict[str, Any], tmp_path: Path) -> None:
    diags = lint(_inline(tmp_path, case["spec_inline"]))
    ours = GO_CHECKS[case["check"]]
    finding = case["finding"]
    if finding is None:
        node = case.get("node")
        silent = [d for d in diags if d.check == ours and (node is None or d.node == node)]
        assert silent == [], format_report(diags)
        return
    hits = [
        d
        for d in diags
        if d.check == ours
        and d.sequence == finding["sequence"]
        and d.node == finding["node"]
        and d.severity == Severity(case["severity"])
    ]
    assert hits, format_report(diags)
    for value in finding.get("values", []):
        token = str(value).split(" (")[0]
        if token == "nil" or token.startswith("map["):
            continue  # Go's formatting of a null or a map: nothing of ours to compare
        assert any(token in d.message for d in hits), (token, format_report(hits))


def _load_case(case: dict[str, Any]) -> SpecSet:
    if "spec_dir" in case:
        return load_dir(SPINCYCLE_SPECS / case["spec_dir"])
    return load_paths([SPINCYCLE_SPECS / f for f in case["spec_files"]])


def _errors_in(diags: list[Diagnostic], sequence: str) -> list[Diagnostic]:
    return [d for d in diags if d.is_error and d.sequence == sequence]


@pytest.mark.parametrize("case", GRAPH, ids=_ids(GRAPH))
def test_graph(case: dict[str, Any]) -> None:
    diags = lint(_load_case(case))
    report = format_report(diags)
    for sequence in case["errors_in"]:
        checks = {d.check for d in _errors_in(diags, sequence)}
        assert GRAPH_CHECKS[case["id"]][sequence] in checks, (sequence, report)
    for sequence in case["no_errors_in"]:
        assert _errors_in(diags, sequence) == [], (sequence, report)


@pytest.mark.parametrize("case", PARSE, ids=_ids(PARSE))
def test_parse(case: dict[str, Any]) -> None:
    specs = _load_case(case)
    lint(specs)  # whatever the file holds, the linter copes
    loaded = specs.diagnostics
    errors = [d for d in loaded if d.is_error]
    warnings = [d for d in loaded if not d.is_error]
    if case["expect"] == "ok":
        assert errors == [], format_report(loaded)
        assert specs.sequences
    elif case["expect"] == "warning":
        assert errors == [], format_report(loaded)
        assert {d.check for d in warnings} == {PARSE_CHECKS[case["id"]]}
    else:
        assert PARSE_CHECKS[case["id"]] in {d.check for d in errors}, format_report(loaded)


@pytest.mark.parametrize("case", NORMALIZE, ids=_ids(NORMALIZE))
def test_normalize(case: dict[str, Any], tmp_path: Path) -> None:
    """Names come from map keys; `given` defaults to `expected`, `as` to `arg`; the rest is
    kept as written. (retryWait "0s" when retry > 0 is the builder's default, not the
    loader's: the loader keeps it unset.)"""
    specs = _inline(tmp_path, case["spec_inline"])
    want = case["expect_processed"]
    seq = specs.sequences[want["sequence_name"]]
    assert seq.name == want["sequence_name"]
    for name, expected in want["nodes"].items():
        node = seq.nodes[name]
        assert node is not None
        assert node.name == expected["name"]
        assert [(a.expected, a.given_name) for a in node.args if a is not None] == [
            (a["expected"], a["given"]) for a in expected["args"]
        ]
        assert [(s.arg, s.as_name) for s in node.sets if s is not None] == [
            (s["arg"], s["as"]) for s in expected["sets"]
        ]
        assert node.retry == expected["retry"]
        if expected["retryWait"] in ("", "0s"):
            assert node.retryWait is None
        else:
            assert node.retryWait == expected["retryWait"]
    node_c = seq.nodes["node-c"]
    assert node_c is not None
    assert (node_c.type, node_c.if_, node_c.deps) == ("seq-c", "arg-if", ["node-1"])
    assert node_c.eq == {"cond-1": "seq-1", "default": "default"}
    diags = lint(specs)  # deliberately invalid: found, not raised
    assert {"unknown-dep", "conditional-with-type"} <= {d.check for d in diags}
