"""The request-spec model (Spin Cycle v2 spec language plus spind's extensions).

Every type here is a msgspec Struct decoded from YAML by :mod:`daemon.specload`, which also
records where each field stood in its file. Fields keep Spin Cycle's YAML names; Python
keywords (`as`, `if`, `with`) are renamed on the Python side only.

Processing (Spin Cycle's ``ProcessSpecs``) is expressed as properties rather than by
rewriting: ``NodeArg.given_name`` defaults to ``expected``, ``NodeSet.as_name`` to ``arg``, so
that checks that must see the raw input still can.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class Category(enum.StrEnum):
    """What a node is: one job, a call of another sequence, or a choice between sequences."""

    JOB = "job"
    SEQUENCE = "sequence"
    CONDITIONAL = "conditional"


class OnInterrupt(enum.StrEnum):
    """What happens to a try that the daemon's crash or shutdown interrupted."""

    RERUN = "rerun"
    FAIL = "fail"
    HOLD = "hold"


#: The sequence that every spec may name and that does nothing (Spin Cycle documents it).
NOOP_SEQUENCE = "noop"


class _Base(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class SeqArg(_Base):
    """An argument a sequence declares: required, optional (with a default) or static."""

    name: str | None = None
    desc: str = ""
    default: str | None = None


class SeqArgs(_Base):
    required: list[SeqArg | None] = msgspec.field(default_factory=list)
    optional: list[SeqArg | None] = msgspec.field(default_factory=list)
    static: list[SeqArg | None] = msgspec.field(default_factory=list)


class ACL(_Base):
    """Who may do what with a request type: `admin: true` grants every op, else `ops` lists them.

    As in Spin Cycle, `ops` is a list (`ops: [start, stop]`); a single word such as `ops: stop`
    or `ops: admin` is refused when the spec is loaded. The ops are `start` and `stop`; any other
    name is accepted (Spin Cycle does) and grants nothing, the linter warns about it.
    """

    role: str = ""
    admin: bool = False
    ops: list[str] | None = None

    def grants(self, op: str) -> bool:
        """Whether this entry lets its role do `op` (`start` or `stop`)."""
        return self.admin or op in (self.ops or ())


class NodeArg(_Base):
    """`expected` is the name the job (or called sequence) sees; `given` the name here."""

    expected: str | None = None
    given: str | None = None

    @property
    def given_name(self) -> str:
        return self.given if self.given else (self.expected or "")


class NodeSet(_Base):
    """`arg` is the name the job (or called sequence) sets; `as` the name it gets here."""

    arg: str | None = None
    as_: str | None = msgspec.field(default=None, name="as")

    @property
    def as_name(self) -> str:
        return self.as_ if self.as_ else (self.arg or "")


class NodeSpec(_Base):
    """One node of a sequence."""

    name: str = ""
    category: str | None = None
    type: str | None = None
    each: list[str] = msgspec.field(default_factory=list)
    parallel: str | None = None
    args: list[NodeArg | None] = msgspec.field(default_factory=list)
    sets: list[NodeSet | None] = msgspec.field(default_factory=list)
    deps: list[str] = msgspec.field(default_factory=list)
    retry: int = 0
    retryWait: str | None = None
    if_: str | None = msgspec.field(default=None, name="if")
    eq: dict[str, str] | None = None
    # spind extensions
    with_: dict[str, Any] | None = msgspec.field(default=None, name="with")
    timeout: str | None = None
    onInterrupt: str | None = None
    retryBackoff: float | None = None
    retryMaxWait: str | None = None
    retryOn: list[int] | None = None

    @property
    def each_pairs(self) -> list[tuple[str, str]]:
        """`list:element` entries that are well formed, as (list, element)."""
        out = []
        for entry in self.each:
            parts = entry.split(":")
            if len(parts) == 2 and parts[0] and parts[1]:
                out.append((parts[0], parts[1]))
        return out

    @property
    def is_conditional(self) -> bool:
        return self.category == Category.CONDITIONAL

    def called_sequences(self) -> list[str]:
        """Sequences this node may import (a sequence node: one; a conditional: each branch)."""
        if self.category == Category.SEQUENCE and self.type:
            return [self.type]
        if self.category == Category.CONDITIONAL and self.eq:
            seen: list[str] = []
            for target in self.eq.values():
                if target not in seen:
                    seen.append(target)
            return seen
        return []

    def parallel_limit(self) -> int | str | None:
        """An int, the name of an arg holding one, or None for no limit."""
        if self.parallel is None:
            return None
        text = self.parallel.strip()
        if text.lstrip("+-").isdigit():
            return int(text)
        return text


class SequenceSpec(_Base):
    """A sequence: a graph of nodes with its own arguments; `request: true` makes it startable."""

    name: str = ""
    filename: str = ""
    request: bool = False
    args: SeqArgs = msgspec.field(default_factory=SeqArgs)
    acl: list[ACL | None] = msgspec.field(default_factory=list)
    nodes: dict[str, NodeSpec | None] = msgspec.field(default_factory=dict)
    # spind extensions (request level)
    timeout: str | None = None
    failFast: bool = False
    desc: str = ""

    def node_list(self) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if n is not None]

    def arg_names(self) -> list[str]:
        out: list[str] = []
        for group in (self.args.required, self.args.optional, self.args.static):
            out.extend(a.name for a in group if a is not None and a.name)
        return out


class SpecFile(_Base):
    sequences: dict[str, SequenceSpec | None] = msgspec.field(default_factory=dict)


#: Fields of each mapping that the linter knows, for unknown-field warnings.
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "file": frozenset({"sequences"}),
    "sequence": frozenset({"request", "args", "acl", "nodes", "timeout", "failFast", "desc"}),
    "seqargs": frozenset({"required", "optional", "static"}),
    "seqarg": frozenset({"name", "desc", "default"}),
    "acl": frozenset({"role", "admin", "ops"}),
    "node": frozenset(
        {
            "name",
            "category",
            "type",
            "each",
            "parallel",
            "args",
            "sets",
            "deps",
            "retry",
            "retryWait",
            "if",
            "eq",
            "with",
            "timeout",
            "onInterrupt",
            "retryBackoff",
            "retryMaxWait",
            "retryOn",
        }
    ),
    "nodearg": frozenset({"expected", "given"}),
    "nodeset": frozenset({"arg", "as"}),
}
