"""Recognising what a crashed boot left running: /proc parsing and the choice of groups."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.orphans import (
    ENV_BOOT,
    ENV_JOURNAL,
    Marker,
    Orphan,
    Proc,
    live_groups,
    marker_env,
    marker_of,
    orphan_groups,
    parse_environ,
    parse_stat,
    protected_groups,
)

J = "/var/lib/spind/spind.db"
OLD, NOW = "01HOLDBOOT0000000000000000", "01HNOWBOOT0000000000000000"
ENV = {
    ENV_JOURNAL: J,
    ENV_BOOT: OLD,
    "SPIND_REQUEST_ID": "R1",
    "SPIND_JOB_ID": "j2",
    "SPIND_TRY": "3",
}
M = Marker(journal=J, boot=OLD, request_id="R1", job_id="j2", try_no=3)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", {}),
        (b"A=1\0B=2\0", {"A": "1", "B": "2"}),
        (b"A=1\0B=2", {"A": "1", "B": "2"}),  # no final NUL
        (b"A=x=y\0", {"A": "x=y"}),  # only the first = splits
        (b"A=\0", {"A": ""}),
        (b"noequals\0=novalue\0A=1\0", {"A": "1"}),  # malformed entries skipped
        (b"A=1\0A=2\0", {"A": "1"}),  # the first wins, as for getenv
        (b"A=\xff\0", {"A": "\udcff"}),  # not UTF-8: kept, byte for byte
    ],
)
def test_parse_environ(data: bytes, expected: dict[str, str]) -> None:
    assert parse_environ(data) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, M),
        ({"PATH": "/bin"}, M),
        ({ENV_JOURNAL: None}, None),
        ({ENV_BOOT: ""}, None),
        ({"SPIND_REQUEST_ID": None}, None),
        ({"SPIND_JOB_ID": None}, None),
        ({"SPIND_TRY": None}, None),
        ({"SPIND_TRY": "x"}, None),
        ({"SPIND_TRY": "-1"}, None),
        ({"SPIND_TRY": "\u0663"}, None),  # a digit, but not an ASCII one
    ],
)
def test_marker_of(change: dict[str, str | None], expected: Marker | None) -> None:
    env = {**ENV, **change}
    assert marker_of({k: v for k, v in env.items() if v is not None}) == expected


def test_marker_env_round_trips() -> None:
    env = {**marker_env(J, OLD), "SPIND_REQUEST_ID": "R1", "SPIND_JOB_ID": "j2", "SPIND_TRY": "3"}
    raw = b"".join(f"{k}={v}\0".encode() for k, v in env.items())
    assert marker_of(parse_environ(raw)) == M


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42 (sleep) S 1 42 42 0 -1 4194560 100 0 0 0", ("S", 1, 42)),
        ("7 (a b) c)) Z 3 5 5 0", ("Z", 3, 5)),  # a name with spaces and parentheses
        ("7 () R 0 0 0", ("R", 0, 0)),
        ("7 (x) R 1", None),  # too short
        ("7 (x) R one 2 3", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_parse_stat(text: str, expected: tuple[str, int, int] | None) -> None:
    assert parse_stat(text) == expected


def proc(
    pid: int, pgid: int, marker: Marker | None = M, *, state: str = "S", ppid: int = 1
) -> Proc:
    return Proc(pid=pid, state=state, ppid=ppid, pgid=pgid, marker=marker)


def other(**kw: Any) -> Marker:
    fields = {"journal": J, "boot": OLD, "request_id": "R1", "job_id": "j2", "try_no": 3, **kw}
    return Marker(**fields)


STALE = [("R1", "j2", 3, OLD)]


@pytest.mark.parametrize(
    ("procs", "protected", "expected"),
    [
        ([], (), []),
        ([proc(10, 10)], (), [Orphan(pgid=10, members=((10, M),))]),
        # a child in the same group and an unmarked member: one group, marked members listed
        (
            [proc(11, 10), proc(10, 10), proc(12, 10, None)],
            (),
            [Orphan(pgid=10, members=((10, M), (11, M)))],
        ),
        # a child that started its own session is a group of its own
        (
            [proc(10, 10), proc(20, 20, ppid=10)],
            (),
            [Orphan(pgid=10, members=((10, M),)), Orphan(pgid=20, members=((20, M),))],
        ),
        ([proc(10, 10, other(journal="/elsewhere/spind.db"))], (), []),  # another journal
        ([proc(10, 10, other(boot=NOW))], (), []),  # this boot's try
        ([proc(10, 10, other(try_no=2))], (), []),  # a try that ended: not RUNNING
        ([proc(10, 10, other(request_id="R9"))], (), []),
        ([proc(10, 10, other(job_id="j9"))], (), []),
        ([proc(10, 10, None)], (), []),
        ([proc(10, 10, state="Z")], (), []),  # a zombie: already dead
        ([proc(10, 10)], (10,), []),  # the daemon's own group or an ancestor's
        ([proc(10, 1), proc(11, 0)], (), []),  # never init's group nor group 0
    ],
)
def test_orphan_groups(
    procs: list[Proc], protected: tuple[int, ...], expected: list[Orphan]
) -> None:
    assert orphan_groups(procs, journal=J, stale_tries=STALE, protected=protected) == expected


@pytest.mark.parametrize(
    ("procs", "self_pid", "expected"),
    [
        ([], 5, set()),
        ([proc(5, 5, None, ppid=4)], 5, {5}),
        # self -> parent -> grandparent -> init
        (
            [
                proc(5, 3, None, ppid=4),
                proc(4, 3, None, ppid=3),
                proc(3, 2, None, ppid=1),
                proc(1, 1, None, ppid=0),
            ],
            5,
            {3, 2, 1},
        ),
        # an ancestor not visible (another user's): the walk stops there
        ([proc(5, 5, None, ppid=4), proc(3, 3, None, ppid=1)], 5, {5}),
        ([proc(5, 5, None, ppid=6), proc(6, 6, None, ppid=5)], 5, {5, 6}),  # a cycle ends
    ],
)
def test_protected_groups(procs: list[Proc], self_pid: int, expected: set[int]) -> None:
    assert protected_groups(procs, self_pid) == expected


@pytest.mark.parametrize(
    ("procs", "pgids", "expected"),
    [
        ([], {10}, set()),
        ([proc(10, 10, None)], {10}, {10}),
        ([proc(10, 10, None, state="Z")], {10}, set()),
        ([proc(10, 10, None, state="Z"), proc(11, 10, None, state="D")], {10}, {10}),
        ([proc(10, 10, None, state="X"), proc(20, 20, None)], {10, 20}, {20}),
        ([proc(30, 30, None)], {10}, set()),  # other groups do not count
    ],
)
def test_live_groups(procs: list[Proc], pgids: set[int], expected: set[int]) -> None:
    assert live_groups(procs, pgids) == expected
