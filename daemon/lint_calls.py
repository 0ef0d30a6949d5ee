"""Checks across sequences: what a node calls, and what it passes and expects back.

A sequence node calls one sequence (its `type`), a conditional one of several (the values of
its `eq`). Checked here: the called sequences exist; required args are passed and passed args
are declared; `sets` names only args the callee sets (every branch, for a conditional);
sequences do not include themselves; a caller of a sequence that cannot be built is told so.
Job nodes are checked against the job types, when they are known, and `{{name}}` references
in `with:` against the node's args.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from daemon.diagnostics import Diagnostic, Severity
from daemon.lint_fields import did_you_mean
from daemon.lint_graph import FieldPath, cyclic_components, outputs
from daemon.spec import NOOP_SEQUENCE, Category, NodeSpec, SequenceSpec
from daemon.specload import SpecSet

if TYPE_CHECKING:
    from daemon.lint import JobTypeLookup

E = Severity.ERROR
W = Severity.WARNING

#: `{{ name }}` as the job types render it (daemon.jobs.template is the reference).
_TEMPLATE = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
_EMPTY = SequenceSpec(name=NOOP_SEQUENCE)


def targets(node: NodeSpec) -> list[tuple[FieldPath, str]]:
    """The sequences a node may call, each with the field that names it."""
    if node.category == Category.SEQUENCE and node.type:
        return [(("type",), node.type)]
    if node.category == Category.CONDITIONAL and node.eq:
        return [(("eq", key), value) for key, value in node.eq.items()]
    return []


class Callees:
    """Looks up called sequences; `noop` is the built-in empty one unless a spec defines it."""

    def __init__(self, specs: SpecSet, undecoded: set[str]) -> None:
        self.specs = specs
        self.undecoded = undecoded

    def get(self, name: str) -> SequenceSpec | None:
        seq = self.specs.sequences.get(name)
        if seq is None and name == NOOP_SEQUENCE:
            return _EMPTY
        return seq

    def args_known(self, name: str) -> bool:
        """The callee exists and its args loaded."""
        return self.get(name) is not None and name not in self.undecoded

    def sets_known(self, name: str) -> bool:
        """The callee's args and every one of its nodes loaded."""
        seq = self.get(name)
        return seq is not None and self.args_known(name) and None not in seq.nodes.values()

    def sets_of(self, name: str) -> set[str]:
        seq = self.get(name)
        if seq is None:
            return set()
        return {arg for node in seq.node_list() for arg, _ in outputs(node)}


def check_node_calls(
    specs: SpecSet,
    seq: str,
    node: NodeSpec,
    callees: Callees,
    job_types: JobTypeLookup | None,
) -> Iterator[Diagnostic]:
    """Everything about one node that needs another sequence or the job types."""
    called = targets(node)
    for path, target in called:
        if callees.get(target) is None:
            yield _unknown_sequence(specs, seq, node, path, target, job_types)
    distinct = list(dict.fromkeys(target for _, target in called))
    if distinct:
        yield from _required_args(specs, seq, node, distinct, callees)
        if all(callees.args_known(t) for t in distinct):
            yield from _passed_args(specs, seq, node, distinct, callees)
        yield from _missing_sets(specs, seq, node, distinct, callees)
    if node.category == Category.JOB and node.type and job_types is not None:
        yield from _job_type(specs, seq, node, node.type, job_types)
    if node.with_:
        yield from _templates(specs, seq, node)


def _unknown_sequence(
    specs: SpecSet,
    seq: str,
    node: NodeSpec,
    path: FieldPath,
    target: str,
    job_types: JobTypeLookup | None,
) -> Diagnostic:
    msg = f"sequence {target!r} does not exist"
    is_job_type = job_types is not None and job_types.params(target) is not None
    if is_job_type and node.category == Category.SEQUENCE:
        msg += f"; {target} is a job type: did you mean category: job?"
    else:
        msg += did_you_mean(target, [*specs.sequences, NOOP_SEQUENCE])
    return specs.diag(E, "unknown-sequence", msg, seq, node.name, path=path)


def _provided(node: NodeSpec) -> set[str]:
    names = {a.expected for a in node.args if a is not None and a.expected}
    return names | {element for _, element in node.each_pairs}


def _required(seq: SequenceSpec) -> list[str]:
    return [a.name for a in seq.args.required if a is not None and a.name]


def _required_args(
    specs: SpecSet, seq: str, node: NodeSpec, called: list[str], callees: Callees
) -> Iterator[Diagnostic]:
    provided = _provided(node)
    missing: dict[str, list[str]] = {}
    for target in called:
        callee = callees.get(target)
        if callee is None or not callees.args_known(target):
            continue
        for arg in _required(callee):
            if arg not in provided:
                missing.setdefault(arg, []).append(target)
    if not missing:
        return
    parts = [f"{arg} (required by {', '.join(seqs)})" for arg, seqs in missing.items()]
    many = len(parts) > 1
    msg = f"node does not pass required arg{'s' * many} {'; '.join(parts)}"
    msg += f": pass {'them' if many else 'it'} in args or as an each element"
    yield specs.diag(E, "missing-required-arg", msg, seq, node.name, path=("args",))


def _passed_args(
    specs: SpecSet, seq: str, node: NodeSpec, called: list[str], callees: Callees
) -> Iterator[Diagnostic]:
    """Args the callee(s) do not declare (a warning), each elements they take only as
    optional or static (an error: each passes a required arg per copy)."""
    declared: set[str] = set()
    required: set[str] = set()
    for target in called:
        callee = callees.get(target)
        if callee is not None:
            declared.update(callee.arg_names())
            required.update(_required(callee))
    for i, arg in enumerate(node.args):
        if arg is not None and arg.expected and arg.expected not in declared:
            msg = _no_such(arg.expected, called)
            yield specs.diag(W, "extra-arg", msg, seq, node.name, ("args", i))
    for i, entry in enumerate(node.each):
        parts = entry.split(":")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            continue
        element = parts[1]
        if element not in declared:
            msg = _no_such(element, called)
            yield specs.diag(W, "extra-arg", msg, seq, node.name, ("each", i))
        elif element not in required:
            who = called[0] if len(called) == 1 else f"one of {', '.join(called)}"
            msg = (
                f"each element {element} must be a required arg of {who}"
                "; it is declared there only as optional or static"
            )
            yield specs.diag(E, "each-element-not-required", msg, seq, node.name, ("each", i))


def _no_such(arg: str, called: list[str]) -> str:
    if len(called) == 1:
        return f"arg {arg} is passed but sequence {called[0]} does not declare it"
    return f"arg {arg} is passed but none of {', '.join(called)} declares it"


def _missing_sets(
    specs: SpecSet, seq: str, node: NodeSpec, called: list[str], callees: Callees
) -> Iterator[Diagnostic]:
    if not all(callees.sets_known(t) for t in called):
        return
    made = {t: callees.sets_of(t) for t in called}
    for i, item in enumerate(node.sets):
        if item is None or not item.arg:
            continue
        lacking = [t for t in called if item.arg not in made[t]]
        if not lacking:
            continue
        if node.category == Category.CONDITIONAL:
            msg = f"arg {item.arg} is not set by every branch: {', '.join(lacking)} never set it"
        else:
            msg = f"sequence {lacking[0]} never sets arg {item.arg}"
        yield specs.diag(E, "missing-sets", msg, seq, node.name, path=("sets", i))


def _job_type(
    specs: SpecSet, seq: str, node: NodeSpec, type_name: str, job_types: JobTypeLookup
) -> Iterator[Diagnostic]:
    params = job_types.params(type_name)
    if params is None:
        msg = f"unknown job type {type_name!r}"
        known_types = getattr(job_types, "known_types", None)  # optional, for a hint
        if type_name in specs.sequences:
            msg += f"; {type_name} is a sequence: did you mean category: sequence?"
        elif callable(known_types):
            msg += did_you_mean(type_name, [str(t) for t in known_types()])
        yield specs.diag(E, "unknown-job-type", msg, seq, node.name, path=("type",))
        return
    given = node.with_ or {}
    known = sorted(params)
    for key in given:
        if key in params:
            continue
        hint = did_you_mean(str(key), known) or (
            f"; known: {', '.join(known)}" if known else "; it takes none"
        )
        msg = f"job type {type_name} has no parameter {key!r}{hint}"
        yield specs.diag(W, "unknown-with-key", msg, seq, node.name, path=("with", key))
    where: FieldPath = ("with",) if node.with_ is not None else ("type",)
    missing = sorted(job_types.required_params(type_name) - set(given))
    if missing:
        msg = f"job type {type_name} needs with: {', '.join(missing)}"
        yield specs.diag(E, "missing-with-key", msg, seq, node.name, path=where)
    check_with = getattr(job_types, "check_with", None)
    if callable(check_with):  # optional: the job registry's own checks of the values
        for problem in check_with(type_name, given) or []:
            msg = f"job type {type_name}: with: {problem}"
            yield specs.diag(E, "bad-with", msg, seq, node.name, path=where)


def _strings(value: Any, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    """Every string inside a `with:` value, with its path; safe on self-referencing input."""
    work: list[tuple[Any, FieldPath]] = [(value, path)]
    seen: set[int] = set()
    while work:
        item, where = work.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict | list):
            if id(item) in seen:
                continue
            seen.add(id(item))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            work.extend((v, (*where, k)) for k, v in reversed(list(pairs)))


def _templates(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    """Every `{{name}}` must name an arg the node passes to its job (args or each element).

    A shell job's string `cmd` is the exception: it runs with /bin/sh and nothing is pasted
    into it (args reach it as environment variables), so a `{{name}}` there stays as it is.
    """
    names = _provided(node)
    for path, text in _strings(node.with_, ("with",)):
        refs = [m.group(1) for m in _TEMPLATE.finditer(text)]
        if not refs:
            continue
        if node.type == "shell" and path == ("with", "cmd"):
            msg = (
                "a string cmd runs with /bin/sh and is never templated, so "
                f"{{{{{refs[0]}}}}} stays as it is; use $SPIND_ARG_{refs[0]} or a list cmd"
            )
            yield specs.diag(W, "unrendered-template", msg, seq, node.name, path=path)
            continue
        for ref in refs:
            if ref not in names:
                msg = f"{{{{{ref}}}}} is not an arg of this node: add {{expected: {ref}}} to args"
                yield specs.diag(E, "unknown-template-arg", msg, seq, node.name, path=path)


def _sequences(specs: SpecSet) -> Iterator[tuple[str, SequenceSpec]]:
    """The sequences, skipping anything else a hand-built SpecSet may hold."""
    for name, seq in specs.sequences.items():
        if isinstance(seq, SequenceSpec) and isinstance(seq.nodes, dict):
            yield name, seq


def call_graph(specs: SpecSet) -> dict[str, list[str]]:
    """Sequence -> the defined sequences its nodes call."""
    graph: dict[str, list[str]] = {}
    for name, seq in _sequences(specs):
        callees: dict[str, None] = {}
        for node in seq.node_list():
            for _, target in targets(node):
                if isinstance(specs.sequences.get(target), SequenceSpec):
                    callees[target] = None
        graph[name] = list(callees)
    return graph


def _path(graph: dict[str, list[str]], members: set[str], src: str, dst: str) -> list[str]:
    """A shortest path src -> ... -> dst inside `members` (breadth first)."""
    prev: dict[str, str] = {src: src}
    frontier = [src]
    while frontier and dst not in prev:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    if dst not in prev:
        return [src, dst]
    out = [dst]
    while out[-1] != src:
        out.append(prev[out[-1]])
    return list(reversed(out))


def check_sequence_calls(specs: SpecSet, broken: dict[str, str]) -> Iterator[Diagnostic]:
    """Sequences that include themselves, and callers of sequences that cannot be built.

    `broken` maps a sequence that cannot be built to why; it is not modified.
    """
    graph = call_graph(specs)
    component: dict[str, int] = {}
    for i, comp in enumerate(cyclic_components(graph)):
        members = set(comp)
        for name in comp:
            component[name] = i
        for name in comp:
            for node in specs.sequences[name].node_list():
                for path, target in targets(node):
                    if target not in members:
                        continue
                    ring = [name, *_path(graph, members, target, name)]
                    if target == name:
                        ring = [name, name]
                    msg = f"sequence {name} includes itself: {' -> '.join(ring)}"
                    yield specs.diag(E, "sequence-cycle", msg, name, node.name, path=path)
    why = dict(broken)
    for name in component:
        why.setdefault(name, "it includes itself")
    yield from _propagate(specs, why, component)


def _propagate(
    specs: SpecSet, why: dict[str, str], component: dict[str, int]
) -> Iterator[Diagnostic]:
    reported: set[tuple[str, str, FieldPath]] = set()
    changed = True
    while changed:
        changed = False
        for name, seq in _sequences(specs):
            for node in seq.node_list():
                for path, target in targets(node):
                    same_cycle = name in component and component.get(target) == component[name]
                    key = (name, node.name, path)
                    if target not in why or same_cycle or key in reported:
                        continue
                    reported.add(key)
                    msg = f"sequence {target} cannot be built: {why[target]}"
                    yield specs.diag(E, "subsequence-failed", msg, name, node.name, path=path)
                    if name not in why:
                        why[name] = f"it calls {target}, which cannot be built"
                        changed = True
