"""The spec linter: every finding about a set of loaded specs, placed on the offending field.

:func:`lint` returns the loader's diagnostics plus its own, sorted by file, line and column.
It runs, for every sequence, the checks of its own fields (:mod:`daemon.lint_fields`), its
dependency graph and arg flow (:mod:`daemon.lint_graph`) and what its nodes call
(:mod:`daemon.lint_calls`), then the checks across sequences (self-inclusion, callers of
sequences that cannot be built). Unlike Spin Cycle, which stops at the first failing stage, it
reports as much as it can, but skips checks that would only echo an earlier finding.

The linter never raises: a check that fails on input nobody foresaw becomes an `internal`
error on that sequence, and the other sequences are still checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from daemon import lint_calls, lint_fields, lint_graph
from daemon.diagnostics import Diagnostic, Severity, sort_key
from daemon.spec import NodeSpec
from daemon.specload import SpecSet

__all__ = ["JobTypeLookup", "format_report", "lint"]

#: Findings that make a sequence impossible to build, and how callers are told why.
_WHY_BROKEN = {
    "dep-cycle": "it has a dependency cycle",
    "unknown-dep": "a node deps on a node that does not exist",
    "no-start-node": "no node can start",
    "unknown-sequence": "it calls a sequence that does not exist",
}


class JobTypeLookup(Protocol):
    """What the linter needs to know about job types (the job registry implements it)."""

    def params(self, type_name: str) -> frozenset[str] | None:
        """The `with:` keys the type knows; None if there is no such type."""
        ...

    def required_params(self, type_name: str) -> frozenset[str]:
        """The `with:` keys the type cannot do without."""
        ...


def lint(specs: SpecSet, job_types: JobTypeLookup | None = None) -> list[Diagnostic]:
    """All findings about `specs`: load errors and warnings, then the linter's own.

    Without `job_types`, job types and their `with:` keys are not checked.
    """
    out: list[Diagnostic] = list(specs.diagnostics)
    undecoded = _undecoded(specs)
    callees = lint_calls.Callees(specs, undecoded)
    called = _called(specs)
    for name, seq in specs.sequences.items():
        decoded = name not in undecoded
        graph = lint_graph.check_graph(specs, name, seq, decoded, name in called)
        out.extend(_guarded(specs, name, lint_fields.check_sequence(specs, name, seq, decoded)))
        out.extend(_guarded(specs, name, graph))
        out.extend(_guarded(specs, name, _nodes(specs, name, callees, job_types)))
    found = {(d.sequence, d.check) for d in out if d.sequence is not None}
    broken: dict[str, str] = {}
    for check, why in _WHY_BROKEN.items():  # the most telling reason first
        for sequence in sorted(s for s, c in found if c == check and s is not None):
            broken.setdefault(sequence, why)
    out.extend(_guarded(specs, None, lint_calls.check_sequence_calls(specs, broken)))
    return sorted(out, key=sort_key)


def _nodes(
    specs: SpecSet, name: str, callees: lint_calls.Callees, job_types: JobTypeLookup | None
) -> Iterator[Diagnostic]:
    for node in specs.sequences[name].node_list():
        yield from _guarded(specs, name, _node(specs, name, node, callees, job_types))


def _node(
    specs: SpecSet,
    name: str,
    node: NodeSpec,
    callees: lint_calls.Callees,
    job_types: JobTypeLookup | None,
) -> Iterator[Diagnostic]:
    yield from lint_fields.check_node(specs, name, node)
    yield from lint_calls.check_node_calls(specs, name, node, callees, job_types)


def _called(specs: SpecSet) -> set[str]:
    """Sequences some node calls (an error here only costs the unused-set warnings)."""
    try:
        return {t for callees in lint_calls.call_graph(specs).values() for t in callees}
    except Exception:
        return set(specs.sequences)


def _undecoded(specs: SpecSet) -> set[str]:
    """Sequences whose own fields (args, nodes mapping...) the loader could not decode."""
    return {
        d.sequence
        for d in specs.diagnostics
        if d.sequence is not None and d.node is None and d.check == "type" and d.is_error
    }


def _guarded(
    specs: SpecSet, sequence: str | None, checks: Iterable[Diagnostic]
) -> list[Diagnostic]:
    """Run checks; a failure becomes one `internal` error instead of an exception."""
    got: list[Diagnostic] = []
    try:
        for d in checks:
            got.append(d)
    except Exception as exc:
        try:
            file, line, col = specs.where(sequence) if sequence is not None else ("", 1, 1)
        except Exception:
            file, line, col = ("", 1, 1)
        if not file and specs.files:
            file = specs.files[0]
        got.append(
            Diagnostic(
                severity=Severity.ERROR,
                check="internal",
                message=f"the linter could not check this: {type(exc).__name__}: {exc}",
                file=file,
                line=max(line, 1),
                col=max(col, 1),
                sequence=sequence,
            )
        )
    return got


def format_report(diags: Iterable[Diagnostic]) -> str:
    """One line per finding (see :meth:`Diagnostic.format`), then a count."""
    items = list(diags)
    errors = sum(1 for d in items if d.is_error)
    warnings = len(items) - errors
    lines = [d.format() for d in items]
    if not items:
        lines.append("no problems found")
    else:
        lines.append(
            f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
        )
    return "\n".join(lines)
