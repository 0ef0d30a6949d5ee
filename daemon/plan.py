"""`spind plan`: build a request's chain without running it, and show it as a tree or as JSON.

The tree nests every scope under the node that called it (a sequence node, the branch a
conditional chose, the copies of an `each`) and lists jobs in an order they could run in. An
arg whose value is only known at run time shows as ``name=(run time)``; a deferred node shows
what it waits for. Nothing here reads the clock or runs a job: only the job types' create()
hooks run, as they do when a request is started.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from daemon.builder import build
from daemon.chain import Chain, ChainJob, Group, JobKind, Scope
from daemon.diagnostics import has_errors
from daemon.duration import format_duration
from daemon.errors import ArgError, BuildError
from daemon.jobs.registry import JobFactory
from daemon.lint import lint
from daemon.spec import Category
from daemon.specload import load_dir

#: Shown for an arg a job reads from its scope that is set only at run time.
RUN_TIME = "(run time)"


class KvError(ValueError):
    """A `key=value` argument of `spind plan` is malformed."""


# ---- value formatting


def _text(value: Any) -> str:
    """An arg value as JSON text (strings quoted, so that `""` and spaces stay visible)."""
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _kv(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in values.items())


def _id_key(ident: str) -> tuple[int, str]:
    digits = ident.lstrip("jsg")
    return (int(digits) if digits.isdigit() else sys.maxsize, ident)


def job_order(chain: Chain) -> list[str]:
    """Jobs in a topological order (ties by id); jobs on a cycle, if any, come last by id."""
    preds = {j: 0 for j in chain.jobs}
    succs: dict[str, list[str]] = {j: [] for j in chain.jobs}
    for a, b in chain.edges:
        if a in succs and b in preds:
            succs[a].append(b)
            preds[b] += 1
    ready = [_id_key(j) for j, n in preds.items() if n == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, cur = heapq.heappop(ready)
        out.append(cur)
        for s in succs[cur]:
            preds[s] -= 1
            if preds[s] == 0:
                heapq.heappush(ready, _id_key(s))
    if len(out) < len(chain.jobs):
        seen = set(out)
        out.extend(sorted((j for j in chain.jobs if j not in seen), key=_id_key))
    return out


def runtime_args(job: ChainJob) -> list[str]:
    """The args a job reads from its scope whose values the build did not know."""
    return [e for e, _ in job.inputs if e not in job.args]


# ---- JSON


def chain_to_json(chain: Chain) -> dict[str, Any]:
    """The chain as plain JSON-able data: jobs (in run order), edges, scopes and groups."""
    jobs = []
    for jid in job_order(chain):
        job = chain.jobs[jid]
        scope = chain.scopes.get(job.scope)
        deferred = job.kind == JobKind.DEFERRED
        entry: dict[str, Any] = {
            "id": job.id,
            "name": job.name,
            "type": job.type,
            "args": {} if deferred else dict(job.args),
            "runtimeArgs": runtime_args(job),
            "retry": job.retry,
            "retryWait": job.retry_wait,
            "sequence": job.scope,
            "sequenceName": scope.sequence if scope is not None else "",
            "deferred": deferred,
        }
        if deferred:
            entry["waitsFor"] = str(job.args.get("waitsFor", ""))
        jobs.append(entry)
    return {
        "request": chain.request_type,
        "args": dict(chain.args),
        "timeout": chain.timeout,
        "failFast": chain.fail_fast,
        "jobs": jobs,
        "edges": [[a, b] for a, b in chain.edges],
        "scopes": [_scope_json(s) for s in _sorted(chain.scopes)],
        "groups": [
            {
                "id": g.id,
                "node": g.node,
                "scope": g.scope,
                "parallel": g.parallel,
                "copies": list(g.copies),
            }
            for g in _sorted(chain.groups)
        ],
    }


def _sorted(items: Mapping[str, Any]) -> list[Any]:
    return [items[k] for k in sorted(items, key=_id_key)]


def _scope_json(s: Scope) -> dict[str, Any]:
    return {
        "id": s.id,
        "sequence": s.sequence,
        "node": s.node,
        "parent": s.parent,
        "group": s.group,
        "retry": s.retry,
        "retryWait": s.retry_wait,
        "vars": dict(s.vars),
    }


# ---- the tree


class _Tree:
    """Which jobs, scopes and groups sit directly inside each scope, in run order."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.rank = {j: i for i, j in enumerate(job_order(chain))}
        self.preds = chain.predecessors()
        self.jobs_in: dict[str, list[str]] = {s: [] for s in chain.scopes}
        self.scopes_in: dict[str, list[str]] = {s: [] for s in chain.scopes}
        self.groups_in: dict[str, list[str]] = {s: [] for s in chain.scopes}
        for j in chain.jobs.values():
            self.jobs_in.setdefault(j.scope, []).append(j.id)
        for s in chain.scopes.values():
            if s.parent is not None and s.group is None:
                self.scopes_in.setdefault(s.parent, []).append(s.id)
        for g in chain.groups.values():
            self.groups_in.setdefault(g.scope, []).append(g.id)
        self._first: dict[str, float] = {}

    def first(self, scope_id: str) -> float:
        """The run-order rank of the first job inside a scope (infinity if it has none)."""
        if scope_id in self._first:
            return self._first[scope_id]
        self._first[scope_id] = float("inf")  # guards against a malformed parent cycle
        ranks = [float(self.rank[j]) for j in self.jobs_in.get(scope_id, [])]
        ranks += [self.first(s) for s in self.scopes_in.get(scope_id, [])]
        ranks += [self.group_first(g) for g in self.groups_in.get(scope_id, [])]
        self._first[scope_id] = min(ranks, default=float("inf"))
        return self._first[scope_id]

    def group_first(self, group_id: str) -> float:
        group = self.chain.groups[group_id]
        return min((self.first(c) for c in group.copies), default=float("inf"))

    def items(self, scope_id: str) -> list[tuple[str, str]]:
        """(kind, id) of what sits directly in a scope, in run order."""
        keyed: list[tuple[float, tuple[int, str], str, str]] = []
        for j in self.jobs_in.get(scope_id, []):
            keyed.append((float(self.rank[j]), _id_key(j), "job", j))
        for s in self.scopes_in.get(scope_id, []):
            keyed.append((self.first(s), _id_key(s), "scope", s))
        for g in self.groups_in.get(scope_id, []):
            keyed.append((self.group_first(g), _id_key(g), "group", g))
        keyed.sort()
        return [(kind, ident) for _, _, kind, ident in keyed]


def render_tree(chain: Chain) -> str:
    """A readable tree of a chain (see the module docstring)."""
    tree = _Tree(chain)
    head = f"request {chain.request_type}"
    if chain.args:
        head += f"  {_kv(chain.args)}"
    extra = []
    if chain.timeout is not None:
        extra.append(f"timeout {format_duration(chain.timeout)}")
    if chain.fail_fast:
        extra.append("failFast")
    if extra:
        head += f"  ({', '.join(extra)})"
    lines = [head]
    if chain.root_scope in chain.scopes:
        _render_scope(tree, chain.root_scope, "", lines, set())
    if not chain.jobs:
        lines.append("(no jobs: every node is a noop)")
    return "\n".join(lines) + "\n"


def _render_scope(
    tree: _Tree, scope_id: str, prefix: str, lines: list[str], seen: set[str]
) -> None:
    if scope_id in seen:  # a malformed chain; never loop
        return
    seen.add(scope_id)
    items = tree.items(scope_id)
    for i, (kind, ident) in enumerate(items):
        last = i == len(items) - 1
        branch = prefix + ("└─ " if last else "├─ ")
        inner = prefix + ("   " if last else "│  ")
        if kind == "job":
            lines.append(branch + _job_line(tree, tree.chain.jobs[ident]))
        elif kind == "scope":
            lines.append(branch + _call_line(tree.chain, tree.chain.scopes[ident]))
            _render_scope(tree, ident, inner, lines, seen)
        else:
            group = tree.chain.groups[ident]
            lines.append(branch + _group_line(tree.chain, group))
            copies = sorted(group.copies, key=tree.first)
            for k, copy in enumerate(copies):
                clast = k == len(copies) - 1
                lines.append(inner + ("└─ " if clast else "├─ ") + _copy_line(tree.chain, copy))
                _render_scope(tree, copy, inner + ("   " if clast else "│  "), lines, seen)


def _job_line(tree: _Tree, job: ChainJob) -> str:
    parts = [f"{job.id} {job.name} ({job.type})"]
    if job.kind == JobKind.DEFERRED:
        parts.append(f"[deferred: waits for {job.args.get('waitsFor', '?')}]")
        parts.append(_deferred_what(tree.chain, job))
    else:
        args = _kv(job.args)
        unknown = ", ".join(f"{n}={RUN_TIME}" for n in runtime_args(job))
        shown = ", ".join(p for p in (args, unknown) if p)
        if shown:
            parts.append(f"args: {shown}")
        if job.retry:
            parts.append(f"retry: {job.retry} retryWait: {format_duration(job.retry_wait)}")
        if job.timeout is not None:
            parts.append(f"timeout: {format_duration(job.timeout)}")
    preds = sorted(tree.preds.get(job.id, []), key=_id_key)
    if preds:
        parts.append(f"after: {', '.join(preds)}")
    return "  ".join(parts)


def _deferred_what(chain: Chain, job: ChainJob) -> str:
    """What a deferred node will expand to: its each, its branches or sequence, its limit."""
    seq = chain.specs.get(job.spec_sequence or "")
    node = seq.nodes.get(job.spec_node or "") if seq is not None else None
    if node is None:
        return ""
    what = [f"each {', '.join(node.each)}"] if node.each else []
    if node.category == Category.CONDITIONAL:
        branches = ", ".join(f"{k}: {v}" for k, v in (node.eq or {}).items())
        what.append(f"if {node.if_} {{{branches}}}")
    elif node.category == Category.SEQUENCE:
        what.append(f"sequence {node.type}")
    else:
        what.append(f"job type {node.type}")
    if node.parallel is not None:
        what.append(f"parallel {node.parallel}")
    return "(" + ", ".join(what) + ")"


def _node_of(chain: Chain, scope: Scope) -> tuple[str, str]:
    """(category, `if` arg) of the node that called a scope, from the chain's specs."""
    parent = chain.scopes.get(scope.parent or "")
    seq = chain.specs.get(parent.sequence) if parent is not None else None
    node = seq.nodes.get(scope.node or "") if seq is not None else None
    if node is None:
        return ("", "")
    return (node.category or "", node.if_ or "")


def _retry_text(scope: Scope) -> str:
    if not scope.retry:
        return ""
    return f", retry: {scope.retry} retryWait: {format_duration(scope.retry_wait)}"


def _call_line(chain: Chain, scope: Scope) -> str:
    category, if_arg = _node_of(chain, scope)
    if category == Category.CONDITIONAL:
        what = f"if {if_arg} -> sequence {scope.sequence}"
    else:
        what = f"sequence {scope.sequence}"
    line = f"{scope.node}: {what} (scope {scope.id}{_retry_text(scope)})"
    if scope.vars:
        line += f"  {_kv(scope.vars)}"
    return line


def _group_line(chain: Chain, group: Group) -> str:
    parent = chain.scopes.get(group.scope)
    seq = chain.specs.get(parent.sequence) if parent is not None else None
    node = seq.nodes.get(group.node) if seq is not None else None
    each = ", ".join(node.each) if node is not None else "?"
    limit = f"parallel {group.parallel}" if group.parallel else "no parallel limit"
    n = len(group.copies)
    return (
        f"{group.node}: each {each} (group {group.id}, {limit}, {n} cop{'y' if n == 1 else 'ies'})"
    )


def _copy_line(chain: Chain, scope_id: str) -> str:
    scope = chain.scopes[scope_id]
    category, if_arg = _node_of(chain, scope)
    if category == Category.CONDITIONAL:
        what = f"if {if_arg} -> sequence {scope.sequence}, "
    elif category == Category.SEQUENCE:
        what = f"sequence {scope.sequence}, "
    else:
        what = ""
    line = f"copy ({what}scope {scope.id}{_retry_text(scope)})"
    if scope.vars:
        line += f"  {_kv(scope.vars)}"
    return line


# ---- the command


def parse_kv(kv_args: list[str]) -> dict[str, Any]:
    """`key=value` words -> args. A value starting with `[` is a JSON list of strings."""
    out: dict[str, Any] = {}
    for word in kv_args:
        key, eq, value = word.partition("=")
        key = key.strip()
        if not eq or not key:
            raise KvError(f"expected key=value, got {word!r}")
        if key in out:
            raise KvError(f"arg {key!r} is given twice")
        if value.startswith("["):
            try:
                items = msgspec.json.decode(value, type=list[str])
            except msgspec.DecodeError as exc:
                raise KvError(
                    f"arg {key!r}: a value starting with '[' must be a JSON list of strings "
                    f'such as ["a","b"]: {exc}'
                ) from None
            out[key] = items
        else:
            out[key] = value
    return out


async def plan_command(
    specs_dir: str | Path,
    config_jobs: Mapping[str, str] | None,
    type: str,
    kv_args: list[str],
    as_json: bool,
) -> int:
    """`spind plan`: 0 = built and printed; 1 = spec or build error; 2 = bad args or type."""
    try:
        args = parse_kv(kv_args)
    except KvError as exc:
        print(f"spind plan: {exc}", file=sys.stderr)
        return 2
    specs = load_dir(specs_dir)
    factory = JobFactory(config_jobs)
    diags = lint(specs, factory)  # the loader's findings and the linter's
    for d in diags:
        print(d.format(), file=sys.stderr)
    if has_errors(diags):
        n = sum(1 for d in diags if d.is_error)
        print(f"spind plan: {n} error{'s' if n != 1 else ''} in {specs_dir}", file=sys.stderr)
        return 1
    seq = specs.sequences.get(type)
    if seq is None or not seq.request:
        known = sorted(n for n, s in specs.sequences.items() if s.request)
        what = "unknown request type" if seq is None else "not a request type (no `request: true`)"
        print(
            f"spind plan: {what}: {type!r}; request types: {', '.join(known) or 'none'}",
            file=sys.stderr,
        )
        return 2
    try:
        chain = await build(specs.sequences, type, args, factory)
    except ArgError as exc:
        print(f"spind plan: {exc.message}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"spind plan: cannot build {type!r}: {exc.message}", file=sys.stderr)
        return 1
    if as_json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(chain_to_json(chain))).decode())
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_tree(chain))
    return 0
