"""Static checks of one sequence's own fields: its args, ACL and timeout, and each node's fields.

Each check here looks at one sequence, or one node, alone. Checks that look across sequences
live in :mod:`daemon.lint_calls`; dependency-graph and arg-flow checks in
:mod:`daemon.lint_graph`. Every function yields Diagnostics placed on the offending field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

from daemon.diagnostics import Diagnostic, Severity
from daemon.duration import DurationError, parse_duration
from daemon.spec import Category, NodeSpec, OnInterrupt, SequenceSpec
from daemon.specload import SpecSet

E = Severity.ERROR
W = Severity.WARNING

#: ACL ops a role may be granted (`admin: true` grants both).
ACL_OPS = ("start", "stop")
#: What an arg name may look like where a field holds either a number or an arg name.
ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")

_CATEGORIES = [str(c) for c in Category]
_ON_INTERRUPT = [str(o) for o in OnInterrupt]


def did_you_mean(word: str, choices: list[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or the empty string."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_sequence(
    specs: SpecSet, name: str, seq: SequenceSpec, decoded: bool
) -> Iterator[Diagnostic]:
    """The sequence's own fields. `decoded` is False when the loader could not decode them."""
    yield from _seq_args(specs, name, seq)
    yield from _acl(specs, name, seq)
    if seq.timeout is not None:
        yield from _duration(specs, name, None, "timeout", seq.timeout)
    if decoded and not seq.nodes:
        yield specs.diag(E, "no-nodes", "sequence has no nodes", name, path=("nodes",))


def _seq_args(specs: SpecSet, name: str, seq: SequenceSpec) -> Iterator[Diagnostic]:
    first_kind: dict[str, str] = {}
    for kind in ("required", "optional", "static"):
        for i, arg in enumerate(getattr(seq.args, kind)):
            path: tuple[str | int, ...] = ("args", kind, i)
            if arg is None:
                yield specs.diag(E, "null-entry", f"args.{kind} has a null entry", name, path=path)
                continue
            if not arg.name:
                msg = f"{kind} arg has no name"
                yield specs.diag(E, "arg-no-name", msg, name, path=path)
            label = arg.name or "(unnamed)"
            if kind == "required" and arg.default is not None:
                msg = (
                    f"required arg {label} has a default ({arg.default}); "
                    "drop the default or make the arg optional"
                )
                yield specs.diag(E, "required-arg-default", msg, name, path=(*path, "default"))
            if kind != "required" and arg.default is None:
                msg = f"{kind} arg {label} has no default"
                yield specs.diag(E, "arg-no-default", msg, name, path=path)
            if not arg.name:
                continue
            if arg.name in first_kind:
                msg = f"arg {arg.name} is declared twice (first as a {first_kind[arg.name]} arg)"
                yield specs.diag(E, "duplicate-arg", msg, name, path=(*path, "name"))
            else:
                first_kind[arg.name] = kind


def _acl(specs: SpecSet, name: str, seq: SequenceSpec) -> Iterator[Diagnostic]:
    roles: set[str] = set()
    for i, acl in enumerate(seq.acl):
        path: tuple[str | int, ...] = ("acl", i)
        if acl is None:
            yield specs.diag(E, "null-entry", "acl has a null entry", name, path=path)
            continue
        if not acl.role:
            yield specs.diag(E, "acl-no-role", "acl entry has no role", name, path=path)
        elif acl.role in roles:
            msg = f"acl role {acl.role} is listed twice"
            yield specs.diag(E, "acl-duplicate-role", msg, name, path=(*path, "role"))
        else:
            roles.add(acl.role)
        if acl.admin and acl.ops:
            msg = "acl entry has admin: true and ops; admin already grants every op"
            yield specs.diag(E, "acl-admin-and-ops", msg, name, path=(*path, "admin"))
        for j, op in enumerate(acl.ops or ()):
            if op in ACL_OPS:
                continue
            # Spin Cycle accepts any name here; it grants nothing (the loader refused `ops: word`)
            if op == "admin":
                fix = "; write `admin: true` (instead of ops) to grant every op"
            else:
                fix = did_you_mean(str(op), list(ACL_OPS))
            msg = f"acl.{i}.ops: {op!r} is not an op (start, stop) and grants nothing{fix}"
            yield specs.diag(W, "acl-bad-op", msg, name, path=(*path, "ops", j))


def _duration(
    specs: SpecSet, seq: str, node: str | None, field: str, value: str
) -> Iterator[Diagnostic]:
    try:
        parse_duration(value)
    except DurationError as exc:
        yield specs.diag(E, "bad-duration", f"{field}: {exc}", seq, node, path=(field,))


def check_node(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    """The fields of one node, each on its own."""
    yield from _category(specs, seq, node)
    yield from _each(specs, seq, node)
    yield from _node_args(specs, seq, node)
    yield from _node_sets(specs, seq, node)
    yield from _parallel(specs, seq, node)
    yield from _retry(specs, seq, node)


def _category(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    n = node.name
    cat = node.category
    if cat is None:
        hint = "; did you mean conditional?" if node.if_ is not None or node.eq else ""
        msg = f"node has no category (job, sequence or conditional){hint}"
        yield specs.diag(E, "missing-category", msg, seq, n)
    elif cat not in _CATEGORIES:
        msg = f"unknown category {cat!r}; use job, sequence or conditional"
        msg += did_you_mean(cat, _CATEGORIES)
        yield specs.diag(E, "unknown-category", msg, seq, n, path=("category",))
        return  # which of the checks below apply is unknowable
    if cat == Category.CONDITIONAL:
        if node.type is not None:
            msg = f"a conditional node has no type (got {node.type!r}); its sequences are in eq"
            yield specs.diag(E, "conditional-with-type", msg, seq, n, path=("type",))
        if not node.if_:
            msg = "conditional node has no if (the arg whose value picks the branch)"
            yield specs.diag(E, "conditional-without-if", msg, seq, n)
        if not node.eq:
            msg = "conditional node has no eq (value -> sequence)"
            yield specs.diag(E, "conditional-without-eq", msg, seq, n)
        return
    if not node.type:
        what = "sequence" if cat == Category.SEQUENCE else "job"
        msg = f"node has no type (the {what} it runs)"
        yield specs.diag(E, "missing-type", msg, seq, n)
    if node.if_ is not None:
        msg = f"if: {node.if_} is only allowed on conditional nodes"
        yield specs.diag(E, "if-without-conditional", msg, seq, n, path=("if",))
    if node.eq:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(node.eq.items()))
        msg = f"eq ({shown}) is only allowed on conditional nodes"
        yield specs.diag(E, "eq-without-conditional", msg, seq, n, path=("eq",))


def _each(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    n = node.name
    element_of: dict[str, str] = {}
    list_of: dict[str, str] = {}
    expected = {a.expected for a in node.args if a is not None and a.expected}
    raw_given = {a.given for a in node.args if a is not None and a.expected and a.given}
    for i, entry in enumerate(node.each):
        path = ("each", i)
        parts = entry.split(":")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            msg = f"each entry {entry!r} is not of the form list:element"
            yield specs.diag(E, "bad-each", msg, seq, n, path=path)
            continue
        lst, element = parts
        if element in element_of:
            msg = f"each element {element} is used twice (lists {element_of[element]}, {lst})"
            yield specs.diag(E, "duplicate-each-element", msg, seq, n, path=path)
        else:
            element_of[element] = lst
        if lst in list_of and list_of[lst] != element:
            msg = f"each list {lst} is iterated twice (as {list_of[lst]} and {element})"
            yield specs.diag(W, "each-renamed-twice", msg, seq, n, path=path)
        list_of.setdefault(lst, element)
        if element in expected:
            msg = f"each element {element} is also an expected arg in args; the element sets it"
            yield specs.diag(E, "each-element-is-arg", msg, seq, n, path=path)
        if lst in raw_given:
            msg = f"each list {lst} is also given in args"
            yield specs.diag(W, "each-list-is-arg", msg, seq, n, path=path)


def _node_args(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    n = node.name
    seen: set[str] = set()
    expected_for: dict[str, str] = {}
    for i, arg in enumerate(node.args):
        path: tuple[str | int, ...] = ("args", i)
        if arg is None:
            yield specs.diag(E, "null-arg", "args has a null entry", seq, n, path=path)
            continue
        if not arg.expected:
            msg = "args entry has no expected (the name the job or sequence sees)"
            yield specs.diag(E, "arg-no-expected", msg, seq, n, path=path)
            continue
        if arg.expected in seen:
            msg = f"arg {arg.expected} is expected twice"
            yield specs.diag(E, "duplicate-expected", msg, seq, n, path=(*path, "expected"))
        seen.add(arg.expected)
        given = arg.given_name
        if given in expected_for and expected_for[given] != arg.expected:
            msg = f"arg {given} is given twice (as {expected_for[given]} and {arg.expected})"
            yield specs.diag(W, "args-renamed-twice", msg, seq, n, path=path)
        expected_for.setdefault(given, arg.expected)


def _node_sets(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    n = node.name
    seen_as: set[str] = set()
    as_for: dict[str, str] = {}
    for i, item in enumerate(node.sets):
        path: tuple[str | int, ...] = ("sets", i)
        if item is None:
            yield specs.diag(E, "null-set", "sets has a null entry", seq, n, path=path)
            continue
        if not item.arg:
            msg = "sets entry has no arg (the name the job or sequence sets)"
            yield specs.diag(E, "set-no-arg", msg, seq, n, path=path)
            continue
        name = item.as_name
        if name in seen_as:
            msg = f"arg {name} is set twice by this node"
            yield specs.diag(E, "duplicate-set-as", msg, seq, n, path=(*path, "as"))
        seen_as.add(name)
        if item.arg in as_for and as_for[item.arg] != name:
            msg = f"arg {item.arg} is set twice under different names ({as_for[item.arg]}, {name})"
            yield specs.diag(W, "sets-renamed-twice", msg, seq, n, path=(*path, "arg"))
        as_for.setdefault(item.arg, name)


def _parallel(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    if node.parallel is None:
        return
    n = node.name
    if not node.each:
        msg = "parallel is set but each is not; parallel limits the copies that each makes"
        yield specs.diag(E, "parallel-without-each", msg, seq, n, path=("parallel",))
    limit = node.parallel_limit()
    if isinstance(limit, int):
        if limit <= 0:
            msg = f"parallel: {limit} must be > 0"
            yield specs.diag(E, "bad-parallel", msg, seq, n, path=("parallel",))
    elif limit is not None and not ARG_NAME.fullmatch(limit):
        msg = f"parallel: {limit!r} is neither a positive int nor an arg name"
        yield specs.diag(E, "bad-parallel", msg, seq, n, path=("parallel",))


def _retry(specs: SpecSet, seq: str, node: NodeSpec) -> Iterator[Diagnostic]:
    n = node.name
    if node.retry < 0:
        msg = f"retry: {node.retry} must be >= 0"
        yield specs.diag(E, "bad-retry", msg, seq, n, path=("retry",))
    for field in ("retryWait", "timeout", "retryMaxWait"):
        value = getattr(node, field)
        if value is None or (field == "retryWait" and value == ""):
            continue
        yield from _duration(specs, seq, n, field, value)
    if node.retryWait and node.retry == 0:
        msg = "retryWait is set but retry is 0; set retry or drop retryWait"
        yield specs.diag(E, "retry-wait-without-retry", msg, seq, n, path=("retryWait",))
    if node.onInterrupt is not None and node.onInterrupt not in _ON_INTERRUPT:
        msg = f"onInterrupt: {node.onInterrupt!r} must be one of rerun, fail, hold"
        msg += did_you_mean(node.onInterrupt, _ON_INTERRUPT)
        yield specs.diag(E, "bad-on-interrupt", msg, seq, n, path=("onInterrupt",))
    if node.retryBackoff is not None and not node.retryBackoff >= 1:
        msg = f"retryBackoff: {node.retryBackoff} must be >= 1 (1 = constant wait)"
        yield specs.diag(E, "bad-retry-backoff", msg, seq, n, path=("retryBackoff",))
    for i, code in enumerate(node.retryOn or []):
        if code < 0:
            msg = f"retryOn: {code} must be >= 0"
            yield specs.diag(E, "bad-retry-on", msg, seq, n, path=("retryOn", i))
