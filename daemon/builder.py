"""Request type + args -> Chain. Pure: no I/O of its own, only the job types' create() hooks.

The builder walks the request's sequence in dependency order. A job node becomes one chain job;
a sequence node becomes a new scope holding the called sequence's nodes; a conditional becomes
the scope of the branch its `if` arg chooses; `each` makes one copy per list element, grouped so
that the runtime runs at most `parallel` copies at once. When the value an `each` or `if` needs
is only set by a job at run time, the node is kept as one *deferred* job and expanded later by
:func:`expand`, the same code path, when the runtime finds it runnable.

There are no begin/end wrapper jobs (Spin Cycle has them): a called sequence is spliced in
between its caller's dependencies and dependents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from daemon.chain import Chain, ChainJob, ChainPatch, Group, JobKind, Scope, ScopeVars
from daemon.duration import DurationError, parse_duration
from daemon.errors import ArgError, BuildError
from daemon.jobs.base import Job
from daemon.spec import NOOP_SEQUENCE, Category, NodeSpec, SequenceSpec


class BuildableJob(Protocol):
    async def create(self, args: dict[str, Any]) -> dict[str, Any]: ...

    def serialize(self) -> bytes: ...


class JobMaker(Protocol):
    """What the builder needs of the job factory: make a job to call its create() hook."""

    def make(self, type_name: str, *, name: str, with_: Mapping[str, Any]) -> BuildableJob: ...


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_jobs: int = 100_000
    max_each_elements: int = 100_000
    max_depth: int = 32


_Ends = tuple[list[str], list[str]]  # (entry job ids, exit job ids) of a built piece


class _JobTemplate(msgspec.Struct, kw_only=True):
    """What every job a node makes shares (an `each` makes thousands from one node)."""

    node: NodeSpec
    type_name: str
    inputs: list[tuple[str, str]]
    sets: list[tuple[str, str]]
    retry_wait: float
    retry_max_wait: float | None
    timeout: float | None
    #: the job's type keeps Job's own create() and serialize(): building one gives no args and
    #: no data, so once one was made (its constructor checked `with`), the others need not be
    plain: bool = False


class _CallTemplate(msgspec.Struct, kw_only=True):
    """What every copy of a sequence that one node calls shares."""

    node: NodeSpec
    seq: SequenceSpec
    imports: list[tuple[str, str]]
    imported: frozenset[str]
    #: the called sequence's optional args that the node does not pass, and its static args
    defaults: dict[str, Any]
    required: list[str]
    retry: int
    retry_wait: float
    lifts: list[tuple[str, str]]


#: a sequence, its nodes by name, their dependency order, the nodes some node depends on
_Layout = tuple[SequenceSpec, dict[str, NodeSpec], list[str], frozenset[str]]


def request_args(seq: SequenceSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The request's args: required (must be given), optional (default unless given), static.

    Values must be strings, or lists of strings (for `each`). Raises ArgError naming the arg.
    """
    required = [a.name for a in seq.args.required if a is not None and a.name]
    optional = {a.name: a.default for a in seq.args.optional if a is not None and a.name}
    static = {a.name: a.default for a in seq.args.static if a is not None and a.name}
    for name, value in given.items():
        if name in static:
            raise ArgError(
                f"arg {name!r} is static in {seq.name!r} and cannot be set", {"arg": name}
            )
        if name not in optional and name not in required:
            known = ", ".join(required + list(optional)) or "none"
            raise ArgError(
                f"unknown arg {name!r} for {seq.name!r} (its args: {known})", {"arg": name}
            )
        if not _is_arg_value(value):
            raise ArgError(
                f"arg {name!r} must be a string or a list of strings, got {_kind(value)}",
                {"arg": name},
            )
    missing = [n for n in required if n not in given]
    if missing:
        raise ArgError(
            f"missing required arg{'s' if len(missing) > 1 else ''} for {seq.name!r}: "
            + ", ".join(missing),
            {"missing": missing},
        )
    out: dict[str, Any] = {}
    for n in required:
        out[n] = given[n]
    for n, default in optional.items():
        out[n] = given.get(n, default if default is not None else "")
    for n, default in static.items():
        out[n] = default if default is not None else ""
    return out


def _is_arg_value(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "a number", float: "a number", dict: "an object"}
    kinds |= {str: "a string", list: "a list"}
    return kinds.get(type(value), type(value).__name__)


def reachable_sequences(specs: Mapping[str, SequenceSpec], root: str) -> dict[str, SequenceSpec]:
    """The sequences a request may use, directly or through others (a snapshot for the chain)."""
    out: dict[str, SequenceSpec] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in out or name not in specs:
            continue
        seq = specs[name]
        out[name] = seq
        for node in seq.node_list():
            todo.extend(node.called_sequences())
    return out


async def build(
    specs: Mapping[str, SequenceSpec],
    request_type: str,
    args: Mapping[str, Any],
    factory: JobMaker,
    *,
    limits: Limits | None = None,
    require_request: bool = True,
) -> Chain:
    """Build the chain for a request. Raises BuildError (ArgError for bad args)."""
    if not request_type:
        raise BuildError("request type is empty")
    seq = specs.get(request_type)
    if seq is None:
        raise BuildError(f"unknown request type {request_type!r}", {"type": request_type})
    if require_request and not seq.request:
        raise BuildError(
            f"{request_type!r} is a sequence, not a request type (it lacks `request: true`)",
            {"type": request_type},
        )
    values = request_args(seq, args)
    chain = Chain(
        request_type=request_type,
        args=values,
        specs=reachable_sequences(specs, request_type),
        fail_fast=seq.failFast,
        timeout=_duration(seq.timeout, "timeout", request_type, None),
    )
    b = _Builder(chain, factory, limits or Limits(), base=None)
    root = b.new_scope(sequence=request_type, vars=dict(values))
    chain.root_scope = root
    await b.sequence(seq, root, depth=0)
    chain.next_id = b.next_id
    return chain


async def expand(
    chain: Chain,
    deferred_id: str,
    values: ScopeVars,
    factory: JobMaker,
    *,
    limits: Limits | None = None,
) -> ChainPatch:
    """Expand a deferred node now that its inputs are set. Pure with respect to `chain`.

    The patch adds the node's jobs between the deferred job and its successors; the deferred job
    itself is then done. Raises BuildError if the node still cannot be built (e.g. the list is
    not a list): the runtime fails the deferred job with that message.
    """
    job = chain.jobs[deferred_id]
    if job.kind != JobKind.DEFERRED or job.spec_sequence is None or job.spec_node is None:
        raise BuildError(f"job {deferred_id} is not a deferred node")
    seq = chain.specs.get(job.spec_sequence)
    node = seq.nodes.get(job.spec_node) if seq is not None else None
    if node is None:
        raise BuildError(f"deferred node {job.spec_node!r} is not in the chain's specs")
    work = Chain(
        request_type=chain.request_type,
        args=chain.args,
        jobs=dict(chain.jobs),
        scopes=dict(chain.scopes),
        groups=dict(chain.groups),
        specs=chain.specs,
        next_id=chain.next_id,
    )
    b = _Builder(work, factory, limits or Limits(), base=values)
    depth = _scope_depth(chain, job.scope)
    entries, exits = await b.node(node, job.scope, depth, allow_defer=False)
    succs = [d for (s, d) in chain.edges if s == deferred_id]
    patch = ChainPatch(deferred=deferred_id, next_id=b.next_id, vars_set=b.recorded)
    patch.jobs = [work.jobs[j] for j in b.new_jobs]
    patch.scopes = [work.scopes[s] for s in b.new_scopes]
    patch.groups = [work.groups[g] for g in b.new_groups]
    patch.edges = list(b.edges)
    if entries:
        patch.edges.extend((deferred_id, e) for e in entries)
        patch.remove_edges = [(deferred_id, s) for s in succs]
        patch.edges.extend((x, s) for x in exits for s in succs)
    return patch


def _scope_depth(chain: Chain, scope_id: str) -> int:
    depth = 0
    sid: str | None = scope_id
    while sid is not None and depth < 10_000:
        sid = chain.scopes[sid].parent
        depth += 1
    return depth - 1


def _arg_pairs(node: NodeSpec) -> list[tuple[str, str]]:
    """(expected, given) of a node's `args`: the name inside, the name in the caller."""
    return [(a.expected, a.given_name) for a in node.args if a is not None and a.expected]


def _set_pairs(node: NodeSpec) -> list[tuple[str, str]]:
    """(arg, as) of a node's `sets`: the name set inside, the name it gets outside."""
    return [(s.arg, s.as_name) for s in node.sets if s is not None and s.arg]


def _duration(text: str | None, field: str, where: str, default: float | None) -> float | None:
    if text is None or text == "":
        return default
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise BuildError(f"{where}: {field}: {exc}") from exc


class _BuildVars(ScopeVars):
    """Scope values while building: scopes made in this pass hold their values in place (they
    become the chain's); in an expansion, the scopes that existed before are read through the
    runtime's values and written to an overlay that the patch records (`vars_set`)."""

    def __init__(self, chain: Chain, base: ScopeVars | None) -> None:
        super().__init__(chain)
        self.base = base
        self.new_scopes: set[str] = set()
        self.overlay: dict[str, dict[str, Any]] = {}
        self.recorded: list[tuple[str, str, Any]] = []

    def vars_of(self, scope_id: str) -> dict[str, Any]:
        if self.base is None or scope_id in self.new_scopes:
            return self.chain.scopes[scope_id].vars
        over = self.overlay.get(scope_id)
        base = self.base.vars_of(scope_id)
        return {**base, **over} if over else base

    def store(self, scope_id: str, name: str, value: Any) -> None:
        if self.base is None or scope_id in self.new_scopes:
            self.chain.scopes[scope_id].vars[name] = value
        else:
            self.overlay.setdefault(scope_id, {})[name] = value
            self.recorded.append((scope_id, name, value))


class _Builder:
    """One build or expansion pass. Scopes made in this pass are written in place."""

    def __init__(self, chain: Chain, factory: JobMaker, limits: Limits, base: ScopeVars | None):
        self.chain = chain
        self.factory = factory
        self.limits = limits
        self.base = base
        self.next_id = chain.next_id
        self.new_jobs: list[str] = []
        self.new_scopes: list[str] = []
        self.new_groups: list[str] = []
        self.edges: list[tuple[str, str]] = chain.edges if base is None else []
        self.vars = _BuildVars(chain, base)
        self.recorded = self.vars.recorded
        self._layouts: dict[int, _Layout] = {}
        self._templates: dict[int, _JobTemplate] = {}
        self._calls: dict[tuple[int, int], _CallTemplate] = {}

    # ---- ids and scopes

    def _id(self, prefix: str) -> str:
        n = self.next_id
        self.next_id += 1
        return f"{prefix}{n}"

    def new_scope(self, **fields: Any) -> str:
        sid = self._id("s")
        self.chain.scopes[sid] = Scope(id=sid, **fields)
        self.new_scopes.append(sid)
        self.vars.new_scopes.add(sid)
        return sid

    def lookup(self, sid: str, name: str) -> tuple[bool, Any]:
        return self.vars.lookup(sid, name)

    def set(self, sid: str, name: str, value: Any) -> None:
        self.vars.set(sid, name, value)

    # ---- sequences and nodes

    def _layout(self, seq: SequenceSpec) -> _Layout:
        """(nodes by name, dependency order, nodes some node depends on) of a sequence; the
        same for every copy, so worked out once per build (an `each` makes thousands)."""
        layout = self._layouts.get(id(seq))
        if layout is None or layout[0] is not seq:
            nodes = {n.name: n for n in seq.node_list()}
            order = _topological(seq.name, nodes)
            used = frozenset(d for n in nodes.values() for d in n.deps)
            layout = (seq, nodes, order, used)
            self._layouts[id(seq)] = layout
        return layout

    async def sequence(self, seq: SequenceSpec, scope: str, depth: int) -> _Ends:
        """Build every node of a sequence in a scope; return the entries and exits."""
        _seq, nodes, order, used = self._layout(seq)
        ends: dict[str, _Ends] = {}
        passthrough: dict[str, list[str]] = {}  # node -> exits that stand for it downstream
        entries: list[str] = []
        for name in order:
            node = nodes[name]
            # ordered and without repeats; a dict, as a list's `in` made a join O(n^2)
            preds = list(dict.fromkeys(x for dep in node.deps for x in passthrough[dep]))
            first, last = await self.node(node, scope, depth, allow_defer=True)
            ends[name] = (first, last)
            if first:
                self.edges.extend((p, e) for p in preds for e in first)
                if not preds:
                    entries.extend(first)
                passthrough[name] = last
            else:
                passthrough[name] = preds
        exits = list(
            dict.fromkeys(x for name in order if name not in used for x in passthrough[name])
        )
        return entries, exits

    async def node(self, node: NodeSpec, scope: str, depth: int, *, allow_defer: bool) -> _Ends:
        where = f"sequence {self.chain.scopes[scope].sequence!r}, node {node.name!r}"
        if node.each:
            return await self._each(node, scope, depth, where, allow_defer)
        if node.category == Category.CONDITIONAL:
            return await self._conditional(node, scope, depth, where, {}, allow_defer)
        if node.category == Category.SEQUENCE:
            return await self._call(node, node.type or "", scope, depth, where, {})
        jid = await self._job(node, scope, where, {})
        return [jid], [jid]

    def _defer(self, node: NodeSpec, scope: str, why: str) -> _Ends:
        jid = self._id("j")
        self._count_job()
        self.chain.jobs[jid] = ChainJob(
            id=jid,
            name=node.name,
            type="each" if node.each else "conditional",
            scope=scope,
            kind=JobKind.DEFERRED,
            spec_sequence=self.chain.scopes[scope].sequence,
            spec_node=node.name,
            args={"waitsFor": why},
        )
        self.new_jobs.append(jid)
        return [jid], [jid]

    def _count_job(self) -> None:
        if len(self.chain.jobs) + 1 > self.limits.max_jobs:
            raise BuildError(
                f"the chain would have more than {self.limits.max_jobs} jobs (max_jobs_per_request)"
            )

    def _template(self, node: NodeSpec, where: str) -> _JobTemplate:
        tmpl = self._templates.get(id(node))
        if tmpl is None or tmpl.node is not node:
            tmpl = _JobTemplate(
                node=node,
                type_name=node.type or "",
                inputs=_arg_pairs(node),
                sets=_set_pairs(node),
                retry_wait=_duration(node.retryWait, "retryWait", where, 0.0) or 0.0,
                retry_max_wait=_duration(node.retryMaxWait, "retryMaxWait", where, None),
                timeout=_duration(node.timeout, "timeout", where, None),
            )
            self._templates[id(node)] = tmpl
        return tmpl

    async def _job(self, node: NodeSpec, scope: str, where: str, extra: dict[str, Any]) -> str:
        self._count_job()
        tmpl = self._template(node, where)
        args: dict[str, Any] = dict(extra)
        for expected, given in tmpl.inputs:
            found, value = self.lookup(scope, given)
            if found:
                args[expected] = value
        sets = tmpl.sets
        type_name = tmpl.type_name
        outputs: dict[str, Any] = {}
        data = b""
        if not tmpl.plain:
            try:
                job = self.factory.make(type_name, name=node.name, with_=node.with_ or {})
            except Exception as exc:
                raise BuildError(f"{where}: job type {type_name!r}: {exc}") from exc
            try:
                outputs = await job.create(dict(args))
                data = job.serialize()
            except BuildError:
                raise
            except Exception as exc:
                raise BuildError(
                    f"{where}: create() of job type {type_name!r} failed: {exc}"
                ) from exc
            cls = type(job)
            tmpl.plain = cls.create is Job.create and cls.serialize is Job.serialize
        if outputs:
            missing = [arg for arg, _ in sets if arg not in outputs]
            if missing:
                raise BuildError(
                    f"{where}: job did not set the args its node declares in `sets`: "
                    + ", ".join(missing)
                )
            for arg, as_ in sets:
                self.set(scope, as_, outputs[arg])
        jid = self._id("j")
        self.chain.jobs[jid] = ChainJob(
            id=jid,
            name=node.name,
            type=type_name,
            scope=scope,
            args=args,
            inputs=list(tmpl.inputs),
            sets=list(sets),
            with_=dict(node.with_ or {}),
            retry=max(node.retry, 0),
            retry_wait=tmpl.retry_wait,
            retry_backoff=node.retryBackoff or 1.0,
            retry_max_wait=tmpl.retry_max_wait,
            retry_on=list(node.retryOn) if node.retryOn is not None else None,
            timeout=tmpl.timeout,
            on_interrupt=node.onInterrupt or "rerun",
            data=data or None,
        )
        self.new_jobs.append(jid)
        return jid

    async def _call(
        self,
        node: NodeSpec,
        target: str,
        scope: str,
        depth: int,
        where: str,
        extra: dict[str, Any],
        group: str | None = None,
    ) -> _Ends:
        """Splice a sequence in: a new scope with the node's args imported and sets lifted."""
        if target == NOOP_SEQUENCE and target not in self.chain.specs:
            return [], []
        seq = self.chain.specs.get(target)
        if seq is None:
            raise BuildError(f"{where}: unknown sequence {target!r}")
        if depth + 1 > self.limits.max_depth:
            raise BuildError(
                f"{where}: sequences nest deeper than {self.limits.max_depth} "
                f"(does {target!r} call itself through a conditional?)"
            )
        call = self._call_template(node, seq, where)
        vars_ = dict(call.defaults)
        if extra:
            vars_.update(extra)
            # an `each` element passed under another name (`args: [{expected: x, given: el}]`)
            vars_.update({e: extra[g] for e, g in call.imports if g in extra})
        sid = self.new_scope(
            sequence=target,
            node=node.name,
            parent=scope,
            group=group,
            retry=call.retry,
            retry_wait=call.retry_wait,
            vars=vars_,
            imports=list(call.imports),
            lifts=list(call.lifts),
        )
        missing = [a for a in call.required if a not in call.imported and a not in extra]
        if missing:
            raise BuildError(f"{where}: required arg {missing[0]!r} of {target!r} is not passed")
        return await self.sequence(seq, sid, depth + 1)

    def _call_template(self, node: NodeSpec, seq: SequenceSpec, where: str) -> _CallTemplate:
        key = (id(node), id(seq))
        call = self._calls.get(key)
        if call is None or call.node is not node or call.seq is not seq:
            imports = _arg_pairs(node)
            imported = frozenset(e for e, _ in imports)
            defaults: dict[str, Any] = {}
            for a in seq.args.optional:
                if a is not None and a.name and a.name not in imported:
                    defaults[a.name] = a.default if a.default is not None else ""
            for a in seq.args.static:
                if a is not None and a.name:
                    defaults[a.name] = a.default if a.default is not None else ""
            call = _CallTemplate(
                node=node,
                seq=seq,
                imports=imports,
                imported=imported,
                defaults=defaults,
                required=[a.name for a in seq.args.required if a is not None and a.name],
                retry=max(node.retry, 0) if node.category != Category.JOB else 0,
                retry_wait=_duration(node.retryWait, "retryWait", where, 0.0) or 0.0,
                lifts=_set_pairs(node),
            )
            self._calls[key] = call
        return call

    async def _conditional(
        self,
        node: NodeSpec,
        scope: str,
        depth: int,
        where: str,
        extra: dict[str, Any],
        allow_defer: bool,
        group: str | None = None,
    ) -> _Ends:
        if_arg = node.if_ or ""
        found, value = (True, extra[if_arg]) if if_arg in extra else self.lookup(scope, if_arg)
        if not found:
            if allow_defer:
                return self._defer(node, scope, f"if {if_arg}")
            raise BuildError(f"{where}: arg {if_arg!r} (if) is not set")
        if not isinstance(value, str):
            raise BuildError(f"{where}: arg {if_arg!r} (if) must be a string, got {_kind(value)}")
        eq = node.eq or {}
        target = eq.get(value, eq.get("default"))
        if target is None:
            options = ", ".join(k for k in eq if k != "default")
            raise BuildError(
                f"{where}: 'if: {if_arg}' value {value!r} matches none of: {options}, "
                "and there is no default"
            )
        return await self._call(node, target, scope, depth, where, extra, group)

    async def _each(
        self, node: NodeSpec, scope: str, depth: int, where: str, allow_defer: bool
    ) -> _Ends:
        pairs = node.each_pairs
        if len(pairs) != len(node.each):
            raise BuildError(f"{where}: each entries must be list:element, got {node.each}")
        lists: list[list[Any]] = []
        for list_name, _element in pairs:
            found, value = self.lookup(scope, list_name)
            if not found:
                if allow_defer:
                    return self._defer(node, scope, f"each {list_name}")
                raise BuildError(f"{where}: arg {list_name!r} (each) is not set")
            if not isinstance(value, list):
                raise BuildError(
                    f"{where}: each: arg {list_name!r} is {_kind(value)}, expected a list"
                )
            lists.append(value)
        if len({len(x) for x in lists}) > 1:
            sizes = ", ".join(f"{p[0]}={len(v)}" for p, v in zip(pairs, lists, strict=True))
            raise BuildError(f"{where}: each lists must be equally long ({sizes})")
        count = len(lists[0]) if lists else 0
        if count > self.limits.max_each_elements:
            raise BuildError(
                f"{where}: each over {count} elements; the limit is "
                f"{self.limits.max_each_elements} (max_each_elements)"
            )
        parallel = self._parallel(node, scope, where)
        if parallel == "defer":
            if allow_defer:
                return self._defer(node, scope, f"parallel {node.parallel}")
            raise BuildError(f"{where}: arg {node.parallel!r} (parallel) is not set")
        if_arg = node.if_ or ""
        if (
            allow_defer
            and count
            and node.category == Category.CONDITIONAL
            and if_arg not in {el for _l, el in pairs}
            and not self.lookup(scope, if_arg)[0]
        ):
            # the copies choose their branch by an arg set only at run time
            return self._defer(node, scope, f"if {if_arg}")
        gid = self._id("g")
        copies: list[str] = []
        entries: list[str] = []
        exits: list[str] = []
        for i in range(count):
            extra = {el: lst[i] for (_l, el), lst in zip(pairs, lists, strict=True)}
            (first, last), copy = await self._copy(node, scope, depth, where, extra, gid)
            if copy is not None:
                copies.append(copy)
            entries.extend(first)
            exits.extend(last)
        self.chain.groups[gid] = Group(
            id=gid,
            node=node.name,
            scope=scope,
            parallel=parallel if isinstance(parallel, int) else None,
            copies=copies,
        )
        self.new_groups.append(gid)
        return entries, exits

    async def _copy(
        self, node: NodeSpec, scope: str, depth: int, where: str, extra: dict[str, Any], gid: str
    ) -> tuple[_Ends, str | None]:
        """One element's copy of an `each` node, and the scope that holds it (None: noop)."""
        before = len(self.new_scopes)
        if node.category == Category.CONDITIONAL:
            ends = await self._conditional(node, scope, depth, where, extra, False, gid)
        elif node.category == Category.SEQUENCE:
            ends = await self._call(node, node.type or "", scope, depth, where, extra, gid)
        else:
            sid = self.new_scope(
                sequence=self.chain.scopes[scope].sequence,
                node=node.name,
                parent=scope,
                group=gid,
                vars=dict(extra),
                imports=[(a.given_name, a.given_name) for a in node.args if a is not None],
                lifts=[(s.as_name, s.as_name) for s in node.sets if s is not None and s.arg],
            )
            jid = await self._job(node, sid, where, extra)
            ends = ([jid], [jid])
        return ends, (self.new_scopes[before] if len(self.new_scopes) > before else None)

    def _parallel(self, node: NodeSpec, scope: str, where: str) -> int | str | None:
        limit = node.parallel_limit()
        if limit is None:
            return None
        if isinstance(limit, str):
            found, value = self.lookup(scope, limit)
            if not found:
                return "defer"
            text = str(value).strip() if isinstance(value, str | int) else ""
            if not text.isdigit() or int(text) <= 0:
                raise BuildError(
                    f"{where}: parallel: arg {limit!r} is {value!r}, not a positive integer"
                )
            return int(text)
        if limit <= 0:
            raise BuildError(f"{where}: parallel must be a positive integer, got {limit}")
        return limit


def _topological(seq_name: str, nodes: dict[str, NodeSpec]) -> list[str]:
    """Nodes in dependency order (ties in spec order); BuildError on unknown deps or cycles."""
    for n in nodes.values():
        for d in n.deps:
            if d not in nodes:
                raise BuildError(f"sequence {seq_name!r}, node {n.name!r}: unknown dep {d!r}")
    indeg = {name: len(set(n.deps)) for name, n in nodes.items()}
    users: dict[str, list[str]] = {name: [] for name in nodes}
    for name, n in nodes.items():
        for d in set(n.deps):
            users[d].append(name)
    ready = [name for name in nodes if indeg[name] == 0]
    order: list[str] = []
    while ready:
        cur = ready.pop(0)
        order.append(cur)
        for u in users[cur]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        stuck = sorted(set(nodes) - set(order))
        raise BuildError(f"sequence {seq_name!r}: cyclical dependencies among {stuck}")
    return order
