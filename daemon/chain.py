"""The job chain: what the builder makes from a request and the runtime runs.

A chain is a DAG of jobs. Each job belongs to a *scope*: one copy of a sequence (the request's
own sequence, a sequence node, one element of an `each`, the branch a conditional chose). A
scope holds the args visible inside it; it *imports* args from its parent under new names (the
calling node's `args`), and *lifts* args set inside it back to the parent (the calling node's
`sets`). A job reads its args from its scope when it starts and writes its outputs (its node's
`sets`) into its scope, from where they are lifted upward. All of this is pure data and pure
functions, so that replaying the journal gives the same answers.

A *deferred* node is an `each` or conditional whose inputs are set by a job only at run time;
it sits in the chain like a job and is expanded by :func:`daemon.builder.expand` when it
becomes runnable, replaced by the jobs it stands for.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from daemon.spec import SequenceSpec


class JobKind(enum.StrEnum):
    JOB = "job"
    DEFERRED = "deferred"


class ChainJob(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One vertex of the chain."""

    id: str
    name: str
    type: str
    scope: str
    kind: JobKind = JobKind.JOB
    #: args known when the chain was built (`expected` name -> value)
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    #: (expected, given): args read from the scope when the job starts
    inputs: list[tuple[str, str]] = msgspec.field(default_factory=list)
    #: (arg, as): outputs the job sets, and the name they get in its scope
    sets: list[tuple[str, str]] = msgspec.field(default_factory=list)
    with_: dict[str, Any] = msgspec.field(default_factory=dict, name="with")
    retry: int = 0
    retry_wait: float = 0.0
    retry_backoff: float = 1.0
    retry_max_wait: float | None = None
    retry_on: list[int] | None = None
    timeout: float | None = None
    on_interrupt: str = "rerun"
    #: what the job type's create() hook serialized, if anything
    data: bytes | None = None
    #: for a deferred node: the sequence and node it stands for
    spec_sequence: str | None = None
    spec_node: str | None = None


class Scope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One copy of a sequence: its args, where they come from and where they go."""

    id: str
    sequence: str
    #: the node that called this copy (None for the request's own sequence)
    node: str | None = None
    parent: str | None = None
    #: the `each` group this copy belongs to, if any
    group: str | None = None
    #: sequence retry: the copy restarts from its first node up to `retry` times
    retry: int = 0
    retry_wait: float = 0.0
    #: args bound when the copy was made (defaults, statics, each elements, constants)
    vars: dict[str, Any] = msgspec.field(default_factory=dict)
    #: (name here, name in parent): read through to the parent at run time
    imports: list[tuple[str, str]] = msgspec.field(default_factory=list)
    #: (name here, name in parent): written up to the parent when set here
    lifts: list[tuple[str, str]] = msgspec.field(default_factory=list)


class Group(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The copies an `each` node made, at most `parallel` of them running at once."""

    id: str
    node: str
    scope: str
    parallel: int | None = None
    copies: list[str] = msgspec.field(default_factory=list)


class Chain(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A built request: inspect it before anything runs; the runtime applies patches to it."""

    request_type: str
    args: dict[str, Any]
    jobs: dict[str, ChainJob] = msgspec.field(default_factory=dict)
    edges: list[tuple[str, str]] = msgspec.field(default_factory=list)
    scopes: dict[str, Scope] = msgspec.field(default_factory=dict)
    groups: dict[str, Group] = msgspec.field(default_factory=dict)
    #: the sequences the chain was built from, kept so that expansion and resume use them
    specs: dict[str, SequenceSpec] = msgspec.field(default_factory=dict)
    root_scope: str = "s1"
    next_id: int = 1
    timeout: float | None = None
    fail_fast: bool = False

    def predecessors(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {j: [] for j in self.jobs}
        for a, b in self.edges:
            out[b].append(a)
        return out

    def successors(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {j: [] for j in self.jobs}
        for a, b in self.edges:
            out[a].append(b)
        return out

    def scope_jobs(self, scope_id: str) -> list[str]:
        """Every job inside a scope, including those of its nested scopes."""
        inside = {scope_id}
        changed = True
        while changed:
            changed = False
            for s in self.scopes.values():
                if s.parent in inside and s.id not in inside:
                    inside.add(s.id)
                    changed = True
        return [j.id for j in self.jobs.values() if j.scope in inside]

    def apply(self, patch: ChainPatch) -> None:
        """Apply an expansion in place."""
        removed = set(patch.remove_edges)
        if removed:
            self.edges = [e for e in self.edges if e not in removed]
        for job in patch.jobs:
            self.jobs[job.id] = job
        self.edges.extend(patch.edges)
        for scope in patch.scopes:
            self.scopes[scope.id] = scope
        for group in patch.groups:
            self.groups[group.id] = group
        for scope_id, name, value in patch.vars_set:
            # values a create() hook set are part of the scope from now on (also on reset)
            self.scopes[scope_id].vars[name] = value
        self.next_id = max(self.next_id, patch.next_id)


class ChainPatch(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What expanding one deferred node adds to (and removes from) a chain."""

    deferred: str
    jobs: list[ChainJob] = msgspec.field(default_factory=list)
    edges: list[tuple[str, str]] = msgspec.field(default_factory=list)
    remove_edges: list[tuple[str, str]] = msgspec.field(default_factory=list)
    scopes: list[Scope] = msgspec.field(default_factory=list)
    groups: list[Group] = msgspec.field(default_factory=list)
    #: (scope, name, value): values that create() hooks set in scopes that existed before
    vars_set: list[tuple[str, str, Any]] = msgspec.field(default_factory=list)
    next_id: int = 0


class ScopeVars:
    """The run-time values of every scope of one chain (owned by that chain's traverser)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.values: dict[str, dict[str, Any]] = {}

    def vars_of(self, scope_id: str) -> dict[str, Any]:
        v = self.values.get(scope_id)
        if v is None:
            v = dict(self.chain.scopes[scope_id].vars)
            self.values[scope_id] = v
        return v

    def store(self, scope_id: str, name: str, value: Any) -> None:
        """Bind one value in one scope (no lifting); the builder overrides where values go."""
        self.vars_of(scope_id)[name] = value

    def lookup(self, scope_id: str, name: str) -> tuple[bool, Any]:
        """(found, value) of `name` as seen inside a scope, following its imports upward."""
        sid: str | None = scope_id
        hops = 0
        while sid is not None and hops < 10_000:
            hops += 1
            vals = self.vars_of(sid)
            if name in vals:
                return True, vals[name]
            scope = self.chain.scopes[sid]
            parent_name = next((there for here, there in scope.imports if here == name), None)
            if parent_name is None:
                return False, None
            name, sid = parent_name, scope.parent
        return False, None

    def set(self, scope_id: str, name: str, value: Any) -> None:
        """Bind `name` in a scope and lift it through every enclosing scope that asks for it."""
        sid: str | None = scope_id
        hops = 0
        while sid is not None and hops < 10_000:
            hops += 1
            self.store(sid, name, value)
            scope = self.chain.scopes[sid]
            lifted = next((there for here, there in scope.lifts if here == name), None)
            if lifted is None or scope.parent is None:
                return
            name, sid = lifted, scope.parent

    def job_args(self, job: ChainJob) -> dict[str, Any]:
        """The args a job receives when it starts."""
        args = dict(job.args)
        for expected, given in job.inputs:
            found, value = self.lookup(job.scope, given)
            if found:
                args[expected] = value
        return args

    def apply_patch(self, patch: ChainPatch) -> None:
        """Values an expansion's create() hooks set (already lifted, so no lifting here)."""
        for scope_id, name, value in patch.vars_set:
            self.vars_of(scope_id)[name] = value

    def apply_outputs(self, job: ChainJob, outputs: dict[str, Any]) -> None:
        """A job finished: its declared outputs become visible in its scope (and lifted)."""
        for arg, as_ in job.sets:
            if arg in outputs:
                self.set(job.scope, as_, outputs[arg])

    def reset_scope(self, scope_id: str) -> None:
        """Sequence retry: a copy's values go back to what they were when it was made."""
        for sid in self._nested(scope_id):
            self.values.pop(sid, None)

    def _nested(self, scope_id: str) -> list[str]:
        out = [scope_id]
        i = 0
        while i < len(out):
            cur = out[i]
            out.extend(s.id for s in self.chain.scopes.values() if s.parent == cur)
            i += 1
        return out
