"""ACL entries: what the loader, the linter and the permission check make of each way to write one.

Spin Cycle's ACL is `{role: string, admin: bool, ops: []string}`: its YAML decoder refuses
`ops: stop` or `ops: admin` (a word, not a list), accepts any names in the list, and grants an
op only when it is listed (or `admin: true`). One table row per spelling: the findings (check,
severity, line, column) and which ops the entry then grants to its role.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.api.auth import AuthSettings, Op, may
from daemon.diagnostics import Severity
from daemon.lint import lint
from daemon.specload import load_paths

E, W = Severity.ERROR, Severity.WARNING
SPEC = """\
sequences:
  deploy:
    request: true
    acl:
      - role: ops
{entry}
    nodes:
      a: {{category: job, type: noop}}
"""
#: the entry's first line below `role` (line 6 of SPEC, indented 8)
LINE = 6

CASES = [
    # (entry lines, findings [(check, severity, line, col)], grants start, grants stop)
    ("ops: [start, stop]", [], True, True),
    ("ops: [start]", [], True, False),
    ("ops:\n          - stop", [], False, True),
    ("ops: []", [], False, False),
    ("ops:", [], False, False),
    ("admin: true", [], True, True),
    ("admin: false", [], False, False),
    # a word instead of a list: Spin Cycle's decoder refuses it; so do we, on the field
    ("ops: stop", [("acl-ops-not-list", E, LINE, 9)], False, False),
    ("ops: start", [("acl-ops-not-list", E, LINE, 9)], False, False),
    ("ops: admin", [("acl-ops-not-list", E, LINE, 9)], False, False),
    ("ops: 'start, stop'", [("acl-ops-not-list", E, LINE, 9)], False, False),
    ("ops: ''", [("acl-ops-not-list", E, LINE, 9)], False, False),
    # names that are not ops: Spin Cycle accepts them and they grant nothing; we warn
    ("ops: [admin]", [("acl-bad-op", W, LINE, 15)], False, False),
    ("ops: [start, halt]", [("acl-bad-op", W, LINE, 22)], True, False),
    ("ops: [Stop]", [("acl-bad-op", W, LINE, 15)], False, False),
    # admin and ops together: Spin Cycle's ACLAdminXorOpsSequenceCheck
    ("admin: true\n        ops: [start]", [("acl-admin-and-ops", E, LINE, 9)], True, True),
    # other types: the loader's type error on the field
    ("ops: {start: yes}", [("type", E, LINE, 9)], None, None),
    ("admin: maybe", [("type", E, LINE, 9)], None, None),
]


@pytest.mark.parametrize(
    ("entry", "findings", "start", "stop"), CASES, ids=[c[0].split("\n")[0] for c in CASES]
)
def test_acl_entry(
    tmp_path: Path,
    entry: str,
    findings: list[tuple[str, Severity, int, int]],
    start: bool | None,
    stop: bool | None,
) -> None:
    path = tmp_path / "acl.yaml"
    path.write_text(SPEC.format(entry="        " + entry))
    specs = load_paths([path])
    diags = lint(specs)
    assert [(d.check, d.severity, d.line, d.col) for d in diags] == findings
    for d in diags:
        # file:line:col, the sequence and the field, in the line the user reads
        text = d.format()
        assert text.startswith(f"{path}:{d.line}:{d.col}: {d.severity}: ")
        assert text.endswith("(sequence deploy)")
        if d.check in ("acl-ops-not-list", "acl-bad-op"):
            assert d.message.startswith("acl.0.ops: ")
    if start is None:
        return
    acl = [a for a in specs.sequences["deploy"].acl if a is not None]
    settings = AuthSettings(enabled=True, roles={"u": ["ops"]})
    assert may(settings, "u", Op.START, acl) is start
    assert may(settings, "u", Op.STOP, acl) is stop
    # a role the ACL does not name gets nothing either way
    assert not may(settings, "stranger", Op.START, acl)


@pytest.mark.parametrize(
    ("entry", "hint"),
    [
        ("ops: stop", "write `ops: [stop]`"),
        ("ops: admin", "write `admin: true` (instead of ops) to grant every op"),
        ("ops: [admin]", "write `admin: true` (instead of ops) to grant every op"),
        ("ops: [strat]", "did you mean 'start'?"),
    ],
)
def test_acl_messages_say_what_to_write(tmp_path: Path, entry: str, hint: str) -> None:
    path = tmp_path / "acl.yaml"
    path.write_text(SPEC.format(entry="        " + entry))
    (diag,) = lint(load_paths([path]))
    assert hint in diag.message


def test_a_word_for_ops_costs_one_error_and_the_rest_still_loads(tmp_path: Path) -> None:
    """The bad field is dropped: the sequence keeps `request`, its other ACL entries, its nodes."""
    path = tmp_path / "acl.yaml"
    path.write_text(
        SPEC.format(entry="        ops: stop\n      - role: dev\n        ops: [start, stop]")
    )
    specs = load_paths([path])
    seq = specs.sequences["deploy"]
    assert seq.request and list(seq.nodes) == ["a"]
    assert [(a.role, a.ops) for a in seq.acl if a is not None] == [
        ("ops", None),
        ("dev", ["start", "stop"]),
    ]
    assert [d.check for d in lint(specs)] == ["acl-ops-not-list"]
