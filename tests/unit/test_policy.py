"""Retry and sequence-retry decisions: tables over the pure policy."""

from __future__ import annotations

import pytest

from daemon import policy
from daemon.chain import Chain, ChainJob, Group, Scope


def job(**kw: object) -> ChainJob:
    fields: dict[str, object] = {"id": "j1", "name": "n", "type": "noop", "scope": "s3"}
    fields.update(kw)
    return ChainJob(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "failed", "exit_code", "retry", "wait"),
    [
        ({}, 1, 1, False, 0.0),  # retry 0: one try only
        ({"retry": 2}, 1, 1, True, 0.0),
        ({"retry": 2}, 2, 1, True, 0.0),
        ({"retry": 2}, 3, 1, False, 0.0),  # 1 + retry tries used
        ({"retry": 3, "retry_wait": 2.0}, 1, 1, True, 2.0),
        ({"retry": 3, "retry_wait": 2.0, "retry_backoff": 3.0}, 1, 1, True, 2.0),
        ({"retry": 3, "retry_wait": 2.0, "retry_backoff": 3.0}, 2, 1, True, 6.0),
        ({"retry": 3, "retry_wait": 2.0, "retry_backoff": 3.0}, 3, 1, True, 18.0),
        (
            {"retry": 3, "retry_wait": 2.0, "retry_backoff": 3.0, "retry_max_wait": 5.0},
            3,
            1,
            True,
            5.0,
        ),
        ({"retry": 3, "retry_on": [75, 111]}, 1, 75, True, 0.0),
        ({"retry": 3, "retry_on": [75, 111]}, 1, 1, False, 0.0),  # not retryable: final now
        ({"retry": 3, "retry_on": [75]}, 1, None, False, 0.0),  # no exit code (timeout, ...)
    ],
)
def test_job_retry(
    kw: dict[str, object], failed: int, exit_code: int | None, retry: bool, wait: float
) -> None:
    d = policy.job_retry(job(**kw), failed, exit_code)
    assert d.retry is retry
    assert d.wait == pytest.approx(wait)
    if not retry:
        assert d.reason


def chain() -> Chain:
    # s1 (request) > s2 (sequence node, retry 1) > s3 (each copy in g4, retry 2)
    return Chain(
        request_type="r",
        args={},
        scopes={
            "s1": Scope(id="s1", sequence="r"),
            "s2": Scope(id="s2", sequence="outer", parent="s1", node="o", retry=1),
            "s3": Scope(id="s3", sequence="inner", parent="s2", node="i", retry=2, group="g4"),
            "s5": Scope(id="s5", sequence="plain", parent="s1", node="p"),
        },
        groups={"g4": Group(id="g4", node="i", scope="s2", parallel=2, copies=["s3"])},
    )


@pytest.mark.parametrize(
    ("scope", "tries", "want"),
    [
        ("s3", {}, "s3"),  # innermost copy first
        ("s3", {"s3": 2}, "s3"),  # second retry of s3 left
        ("s3", {"s3": 3}, "s2"),  # s3 used up: the enclosing copy restarts
        ("s3", {"s3": 3, "s2": 2}, None),  # everything used up
        ("s5", {}, None),  # no retry anywhere
        ("s1", {}, None),
    ],
)
def test_sequence_retry(scope: str, tries: dict[str, int], want: str | None) -> None:
    assert policy.sequence_retry(chain(), job(scope=scope), tries) == want


def test_enclosing_copies_innermost_first() -> None:
    assert policy.enclosing_copies(chain(), "s3") == [("g4", "s3")]
    assert policy.enclosing_copies(chain(), "s5") == []
