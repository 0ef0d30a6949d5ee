"""Graph checks of one sequence: its deps, and where each arg a node uses comes from.

A node may use an arg only if it is an arg of its sequence or is set (`sets`, by its `as`
name) by a node that runs before it on every path, i.e. by one of its strict ancestors through
`deps`. A sequence or conditional node's outputs are the names in its own `sets` (lifted from
inside it). The arg-flow check runs only on a sound graph: a sequence with a dependency cycle,
an unknown dep or a node that failed to load gets the graph errors and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

from daemon.diagnostics import Diagnostic, Severity
from daemon.lint_fields import ARG_NAME, did_you_mean
from daemon.spec import Category, NodeSpec, SequenceSpec
from daemon.specload import SpecSet

E = Severity.ERROR
W = Severity.WARNING

FieldPath = tuple[str | int, ...]

#: Checks after which a sequence cannot be built at all (its callers are told so).
STRUCTURAL_CHECKS = frozenset({"dep-cycle", "unknown-dep", "no-start-node"})


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively; edges to unknown vertices ignored.

    Components come out in reverse topological order; vertices within a component keep the
    order in which `graph` lists them.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    order = {v: i for i, v in enumerate(graph)}
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            edges = [w for w in graph[v] if w in graph]
            if i < len(edges):
                work.append((v, i + 1))
                w = edges[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp, key=order.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def cyclic_components(graph: dict[str, list[str]]) -> list[list[str]]:
    """Components that hold a cycle: more than one vertex, or one with an edge to itself."""
    return [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]


def cycle_path(graph: dict[str, list[str]], members: list[str], start: str) -> list[str]:
    """A shortest cycle through `start` inside `members`, as [start, ..., start]."""
    inside = set(members)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            for w in graph.get(v, []):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in inside and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start, start]


def consumed(node: NodeSpec) -> list[tuple[str, FieldPath]]:
    """The args a node reads from its sequence's scope, each with the field that names it."""
    out: list[tuple[str, FieldPath]] = []
    pairs = node.each_pairs
    elements = {element for _, element in pairs}
    for i, arg in enumerate(node.args):
        if arg is None or not arg.expected:
            continue
        if arg.given_name in elements:
            continue  # the each element, set per copy
        out.append((arg.given_name, ("args", i, "given" if arg.given else "expected")))
    for i, entry in enumerate(node.each):
        parts = entry.split(":")
        if len(parts) == 2 and parts[0] and parts[1]:
            out.append((parts[0], ("each", i)))
    if node.category == Category.CONDITIONAL and node.if_:
        out.append((node.if_, ("if",)))
    limit = node.parallel_limit()
    if isinstance(limit, str) and ARG_NAME.fullmatch(limit):
        out.append((limit, ("parallel",)))
    return out


def outputs(node: NodeSpec) -> list[tuple[str, FieldPath]]:
    """The args a node makes visible to the nodes after it (its `sets` by `as` name)."""
    return [
        (item.as_name, ("sets", i))
        for i, item in enumerate(node.sets)
        if item is not None and item.arg
    ]


def check_graph(
    specs: SpecSet, name: str, seq: SequenceSpec, decoded: bool, called: bool = False
) -> Iterator[Diagnostic]:
    """Deps, cycles, start node, then (on a sound graph) arg flow and set-but-unused args.

    `called`: some node calls this sequence, and may lift what it sets, so an arg that no node
    of its own uses is not reported as unused.
    """
    nodes = seq.nodes
    if not nodes:
        return
    sound = decoded and all(n is not None for n in nodes.values())
    graph: dict[str, list[str]] = {}
    for key, node in nodes.items():
        if node is None:
            graph[key] = []
            continue
        graph[key] = []
        for i, dep in enumerate(node.deps):
            if dep in nodes:
                graph[key].append(dep)
                continue
            sound = False
            msg = f"deps names unknown node {dep!r}" + did_you_mean(dep, list(nodes))
            yield specs.diag(E, "unknown-dep", msg, name, key, path=("deps", i))
    if all(n is not None and n.deps for n in nodes.values()):
        msg = "every node has deps, so no node can start"
        yield specs.diag(E, "no-start-node", msg, name, path=("nodes",))
    for comp in cyclic_components(graph):
        sound = False
        first = comp[0]
        ring = cycle_path(graph, comp, first)
        node = nodes[first]
        dep_index = node.deps.index(ring[1]) if node is not None and ring[1] in node.deps else 0
        others = [c for c in comp if c not in ring]
        also = f" (also in the cycle: {', '.join(others)})" if others else ""
        msg = f"dependency cycle: {' -> '.join(ring)} (each deps on the next){also}"
        yield specs.diag(E, "dep-cycle", msg, name, first, path=("deps", dep_index))
    real = {k: n for k, n in nodes.items() if n is not None}
    yield from _duplicate_sets(specs, name, seq, real)
    if not sound:
        return
    yield from _arg_flow(specs, name, seq, real, graph)
    if seq.request and not called:
        yield from _unused_sets(specs, name, real)


def _ancestors(graph: dict[str, list[str]]) -> dict[str, set[str]]:
    """Strict ancestors (transitive deps) of every vertex of an acyclic graph."""
    memo: dict[str, set[str]] = {}
    for root in graph:
        work = [root]
        while work:
            v = work[-1]
            if v in memo:
                work.pop()
                continue
            missing = [d for d in graph[v] if d not in memo]
            if missing:
                work.extend(missing)
                continue
            acc: set[str] = set()
            for d in graph[v]:
                acc.add(d)
                acc |= memo[d]
            memo[v] = acc
            work.pop()
    return memo


def _arg_flow(
    specs: SpecSet,
    name: str,
    seq: SequenceSpec,
    nodes: dict[str, NodeSpec],
    graph: dict[str, list[str]],
) -> Iterator[Diagnostic]:
    seq_args = set(seq.arg_names())
    setters: dict[str, list[str]] = {}
    for key, node in nodes.items():
        for arg, _ in outputs(node):
            setters.setdefault(arg, []).append(key)
    ancestors = _ancestors(graph)
    for key, node in nodes.items():
        visible = set(seq_args)
        for anc in ancestors[key]:
            visible.update(arg for arg, _ in outputs(nodes[anc]))
        for arg, path in consumed(node):
            if arg in visible:
                continue
            msg = f"arg {arg} is neither an arg of this sequence nor set by a node this one deps on"
            elsewhere = [s for s in setters.get(arg, []) if s != key]
            if elsewhere:
                msg += f"; {', '.join(elsewhere)} sets it: add it to deps"
            yield specs.diag(E, "arg-not-set", msg, name, key, path=path)


def _unused_sets(specs: SpecSet, name: str, nodes: dict[str, NodeSpec]) -> Iterator[Diagnostic]:
    used = {arg for node in nodes.values() for arg, _ in consumed(node)}
    for key, node in nodes.items():
        for arg, path in outputs(node):
            if arg not in used:
                msg = f"arg {arg} is set but no node of this request uses it"
                yield specs.diag(W, "unused-set", msg, name, key, path=path)


def _duplicate_sets(
    specs: SpecSet, name: str, seq: SequenceSpec, nodes: dict[str, NodeSpec]
) -> Iterator[Diagnostic]:
    """Two nodes (or a node and the sequence's args) set one arg: the later value wins."""
    owner: dict[str, str] = {arg: "this sequence" for arg in seq.arg_names()}
    for key, node in nodes.items():
        mine: set[str] = set()
        for arg, path in outputs(node):
            if arg in mine:
                continue  # the same node twice: duplicate-set-as says so
            mine.add(arg)
            if arg in owner:
                msg = f"arg {arg} is set by {owner[arg]} and by node {key}"
                yield specs.diag(W, "duplicate-set", msg, name, path=("nodes", key, *path))
            else:
                owner[arg] = f"node {key}"
