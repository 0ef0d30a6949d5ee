"""The job protocol's shared parts: results, output tails, shared `with:` checks."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.jobs.base import JobResult, OutputTail, check_duration, scalar_text
from daemon.model import JobState


@pytest.mark.parametrize("state", [JobState.COMPLETE, JobState.FAIL, JobState.STOPPED])
def test_result_accepts_final_states(state: JobState) -> None:
    assert JobResult(state=state).state is state


@pytest.mark.parametrize(
    "state", [JobState.PENDING, JobState.RUNNING, JobState.SKIPPED, JobState.INTERRUPTED]
)
def test_result_rejects_other_states(state: JobState) -> None:
    with pytest.raises(ValueError, match="cannot end in state"):
        JobResult(state=state)


def test_result_outputs_default_is_not_shared() -> None:
    a = JobResult(state=JobState.COMPLETE)
    a.outputs["x"] = 1
    assert JobResult(state=JobState.COMPLETE).outputs == {}


@pytest.mark.parametrize(
    ("limit", "chunks", "expected", "cut"),
    [
        (10, [b"hello"], "hello", 0),
        (10, [b"0123456789"], "0123456789", 0),
        (10, [b"0123456789", b"ab"], "[... 2 bytes cut]\n23456789ab", 2),
        (4, [b"a", b"b", b"c", b"d", b"e", b"f"], "[... 2 bytes cut]\ncdef", 2),
        (0, [b"abc"], "[... 3 bytes cut]\n", 3),
        (8, [b"bad \xff byte"], "[... 2 bytes cut]\nd \ufffd byte", 2),
        # the cut never leaves half a UTF-8 character in front: "é" is 2 bytes
        (3, ["xé".encode(), b"ab"], "[... 3 bytes cut]\nab", 3),
    ],
)
def test_output_tail(limit: int, chunks: list[bytes], expected: str, cut: int) -> None:
    tail = OutputTail(limit)
    for chunk in chunks:
        tail.feed(chunk)
    assert tail.text() == expected
    assert tail.total == sum(len(c) for c in chunks)
    assert tail.text().startswith(f"[... {cut} bytes cut]") == (cut > 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("s", "s"), (3, "3"), (1.5, "1.5"), (True, "true"), (False, "false"), (None, None)],
)
def test_scalar_text(value: Any, expected: str | None) -> None:
    assert scalar_text(value) == expected


@pytest.mark.parametrize(
    ("with_", "problems"),
    [
        ({}, 0),
        ({"timeout": "30s"}, 0),
        ({"timeout": "1m30s"}, 0),
        ({"timeout": "{{t}}"}, 0),
        ({"timeout": "soon"}, 1),
        ({"timeout": "30"}, 1),
        ({"timeout": ["1s"]}, 1),
    ],
)
def test_check_duration(with_: dict[str, Any], problems: int) -> None:
    found = check_duration(with_, "timeout")
    assert len(found) == problems
    assert all(p.startswith("timeout:") for p in found)
