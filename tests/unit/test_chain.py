"""The chain model's pure parts: ScopeVars (lookup through imports, lifting, resets) and
Chain's graph helpers and patching."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from daemon.chain import Chain, ChainJob, ChainPatch, Group, Scope, ScopeVars


def scopes_chain() -> Chain:
    """s1 (root) <- s2 (a sequence node) <- s3 (a nested sequence node); s4 is s1's sibling copy.

    s2 imports x from s1's a and lifts its y up as z; s3 imports q from s2's x and lifts y as y.
    """
    chain = Chain(request_type="r", args={"a": "A"})
    for scope in (
        Scope(id="s1", sequence="r", vars={"a": "A", "shadow": "root"}),
        Scope(
            id="s2",
            sequence="mid",
            node="call-mid",
            parent="s1",
            vars={"own": "mid-default"},
            imports=[("x", "a"), ("shadow", "shadow")],
            lifts=[("y", "z")],
        ),
        Scope(
            id="s3",
            sequence="inner",
            node="call-inner",
            parent="s2",
            vars={"shadow": "inner"},
            imports=[("q", "x"), ("missing", "nowhere"), ("shadow", "shadow")],
            lifts=[("y", "y"), ("w", "w")],
        ),
        Scope(id="s4", sequence="other", node="copy", parent="s1", vars={"el": "e1"}),
    ):
        chain.scopes[scope.id] = scope
    chain.jobs = {
        "j1": ChainJob(id="j1", name="first", type="t", scope="s1"),
        "j2": ChainJob(id="j2", name="mid-job", type="t", scope="s2"),
        "j3": ChainJob(
            id="j3",
            name="inner-job",
            type="t",
            scope="s3",
            args={"fixed": "F"},
            inputs=[("query", "q"), ("gone", "missing"), ("mine", "shadow")],
            sets=[("result", "y"), ("other", "w")],
        ),
        "j4": ChainJob(id="j4", name="copy-job", type="t", scope="s4"),
    }
    chain.edges = [("j1", "j2"), ("j2", "j3"), ("j1", "j4")]
    return chain


@pytest.mark.parametrize(
    ("scope", "name", "want"),
    [
        ("s1", "a", (True, "A")),
        ("s2", "x", (True, "A")),  # imported under another name
        ("s3", "q", (True, "A")),  # through two imports
        ("s2", "own", (True, "mid-default")),
        ("s3", "own", (False, None)),  # not imported: invisible
        ("s3", "missing", (False, None)),  # imported, but set nowhere
        ("s3", "shadow", (True, "inner")),  # a scope's own value wins over its import
        ("s2", "shadow", (True, "root")),
        ("s4", "a", (False, None)),  # a sibling copy sees nothing it did not import
        ("s4", "el", (True, "e1")),
    ],
)
def test_lookup(scope: str, name: str, want: tuple[bool, Any]) -> None:
    assert ScopeVars(scopes_chain()).lookup(scope, name) == want


@pytest.mark.parametrize(
    ("scope", "name", "visible"),
    [
        # set in s3: lifted to s2 as y, and from s2 to s1 as z
        ("s3", "y", {"s3": ("y", True), "s2": ("y", True), "s1": ("z", True)}),
        # w is lifted out of s3, but s2 does not lift it further
        ("s3", "w", {"s3": ("w", True), "s2": ("w", True), "s1": ("w", False)}),
        # a name nobody lifts stays where it was set
        ("s3", "local", {"s3": ("local", True), "s2": ("local", False), "s1": ("local", False)}),
        ("s1", "y", {"s1": ("y", True), "s2": ("y", False)}),
    ],
)
def test_set_lifts(scope: str, name: str, visible: dict[str, tuple[str, bool]]) -> None:
    values = ScopeVars(scopes_chain())
    values.set(scope, name, "V")
    for sid, (seen_as, found) in visible.items():
        assert values.vars_of(sid).get(seen_as) == ("V" if found else None), (sid, seen_as)


def test_values_do_not_touch_the_chain() -> None:
    chain = scopes_chain()
    before = msgspec.json.encode(chain)
    values = ScopeVars(chain)
    values.set("s3", "y", "V")
    values.set("s1", "a", "changed")
    assert values.lookup("s3", "q") == (True, "changed")
    assert msgspec.json.encode(chain) == before


def test_job_args_and_outputs() -> None:
    chain = scopes_chain()
    values = ScopeVars(chain)
    job = chain.jobs["j3"]
    # build-time args, plus every input found; inputs set nowhere are left out
    assert values.job_args(job) == {"fixed": "F", "query": "A", "mine": "inner"}
    values.apply_outputs(job, {"result": "R", "undeclared": "U"})
    assert values.lookup("s3", "y") == (True, "R")
    assert values.lookup("s1", "z") == (True, "R")
    assert values.lookup("s3", "undeclared") == (False, None)
    assert values.lookup("s3", "w") == (False, None)  # `other` was declared but not output


def test_reset_scope_restores_the_copy_and_its_children_only() -> None:
    chain = scopes_chain()
    values = ScopeVars(chain)
    values.set("s3", "y", "V")  # lands in s3, s2 and (as z) s1
    values.set("s2", "own", "changed")
    values.set("s4", "el", "changed")
    values.reset_scope("s2")
    assert values.vars_of("s2") == {"own": "mid-default"}
    assert values.vars_of("s3") == {"shadow": "inner"}
    assert values.lookup("s1", "z") == (True, "V")  # what was lifted out stays out
    assert values.lookup("s4", "el") == (True, "changed")


def test_apply_patch_sets_without_lifting() -> None:
    values = ScopeVars(scopes_chain())
    values.apply_patch(ChainPatch(deferred="j2", vars_set=[("s3", "y", "P"), ("s1", "n", "N")]))
    assert values.lookup("s3", "y") == (True, "P")
    assert values.lookup("s2", "y") == (False, None)
    assert values.lookup("s1", "n") == (True, "N")


def test_lookup_and_set_stop_on_a_malformed_parent_cycle() -> None:
    chain = Chain(request_type="r", args={})
    chain.scopes = {
        "s1": Scope(id="s1", sequence="a", parent="s2", imports=[("n", "n")], lifts=[("n", "n")]),
        "s2": Scope(id="s2", sequence="b", parent="s1", imports=[("n", "n")], lifts=[("n", "n")]),
    }
    values = ScopeVars(chain)
    assert values.lookup("s1", "n") == (False, None)
    values.set("s1", "n", "V")
    assert values.vars_of("s2")["n"] == "V"


def test_graph_helpers() -> None:
    chain = scopes_chain()
    assert chain.predecessors() == {"j1": [], "j2": ["j1"], "j3": ["j2"], "j4": ["j1"]}
    assert chain.successors() == {"j1": ["j2", "j4"], "j2": ["j3"], "j3": [], "j4": []}
    assert sorted(chain.scope_jobs("s2")) == ["j2", "j3"]
    assert sorted(chain.scope_jobs("s1")) == ["j1", "j2", "j3", "j4"]
    assert chain.scope_jobs("s4") == ["j4"]


def test_apply_patch_to_chain() -> None:
    chain = scopes_chain()
    chain.next_id = 5
    new = ChainJob(id="j7", name="new", type="t", scope="s6")
    patch = ChainPatch(
        deferred="j2",
        jobs=[new],
        edges=[("j2", "j7"), ("j7", "j3")],
        remove_edges=[("j2", "j3")],
        scopes=[Scope(id="s6", sequence="inner", parent="s2", group="g5")],
        groups=[Group(id="g5", node="n", scope="s2", parallel=2, copies=["s6"])],
        next_id=8,
    )
    chain.apply(patch)
    assert chain.jobs["j7"] == new
    assert chain.edges == [("j1", "j2"), ("j1", "j4"), ("j2", "j7"), ("j7", "j3")]
    assert chain.scopes["s6"].group == "g5"
    assert chain.groups["g5"].copies == ["s6"]
    assert chain.next_id == 8
    chain.apply(ChainPatch(deferred="j7", next_id=3))
    assert chain.next_id == 8  # ids never go back


def test_chain_round_trips_through_json() -> None:
    chain = scopes_chain()
    again = msgspec.json.decode(msgspec.json.encode(chain), type=Chain)
    assert again == chain
    assert again.scopes["s2"].imports == [("x", "a"), ("shadow", "shadow")]
