"""Request, job and trace ids."""

from __future__ import annotations

import itertools
import re

import pytest

from daemon import ids


def test_request_ids_are_valid_ulids_and_increase() -> None:
    made = [ids.new_request_id() for _ in range(2000)]
    assert all(ids.is_valid_request_id(i) for i in made)
    assert all(len(i) == 26 for i in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_monotonic_within_one_millisecond() -> None:
    gen = ids.UlidGenerator(clock_ms=lambda: 1_700_000_000_000, random_bits=lambda n: (1 << n) - 1)
    made = [gen.new() for _ in range(100)]
    assert made == sorted(made)
    assert len(set(made)) == 100
    assert {ids.request_id_time_ms(i) for i in made} == {1_700_000_000_000}


def test_clock_stepping_back_keeps_ids_increasing() -> None:
    times = iter([5_000, 6_000, 4_000, 4_000, 7_000])
    gen = ids.UlidGenerator(clock_ms=lambda: next(times), random_bits=lambda n: 12345)
    made = [gen.new() for _ in range(5)]
    assert made == sorted(made)
    assert [ids.request_id_time_ms(i) for i in made] == [5_000, 6_000, 6_000, 6_000, 7_000]


def test_ids_sort_by_time() -> None:
    clock = itertools.count(1_000, 1)
    gen = ids.UlidGenerator(clock_ms=lambda: next(clock))
    a, b = gen.new(), gen.new()
    assert a < b
    assert ids.request_id_time_ms(b) - ids.request_id_time_ms(a) == 1


def test_random_part_overflow_moves_to_next_millisecond() -> None:
    gen = ids.UlidGenerator(clock_ms=lambda: 10, random_bits=lambda n: (1 << n) - 1)
    first = gen.new()  # random part (2**80 - 1) >> 1: room for 2**79 more
    gen._last_rand = (1 << 80) - 1  # force the edge
    second = gen.new()
    assert second > first
    assert ids.request_id_time_ms(second) == 11


def test_request_id_encodes_known_value() -> None:
    gen = ids.UlidGenerator(clock_ms=lambda: 0, random_bits=lambda n: 2)
    assert gen.new() == "0" * 25 + "1"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", True),
        ("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", True),
        ("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", False),  # beyond 48 bits of time
        ("01ARZ3NDEKTSV4RRFFQ69G5FA", False),  # 25 chars
        ("01ARZ3NDEKTSV4RRFFQ69G5FAVV", False),  # 27 chars
        ("01arz3ndektsv4rrffq69g5fav", False),  # lower case
        ("01ARZ3NDEKTSV4RRFFQ69G5FAI", False),  # I is not Crockford
        ("01ARZ3NDEKTSV4RRFFQ69G5FAU", False),  # nor U
        ("01ARZ3NDEKTSV4RRFFQ69G5FA/", False),
        ("", False),
    ],
)
def test_is_valid_request_id(text: str, ok: bool) -> None:
    assert ids.is_valid_request_id(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("j1", True),
        ("j12", True),
        ("j0", True),
        ("j", False),
        ("J1", False),
        ("j1a", False),
        ("1", False),
        ("j-1", False),
        ("j\u0661", False),  # ARABIC-INDIC DIGIT ONE: not an ASCII digit
        ("j1234567890123", False),
    ],
)
def test_is_valid_job_id(text: str, ok: bool) -> None:
    assert ids.is_valid_job_id(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("abc", True),
        ("A-b_c.d:e", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("abc\n", False),
    ],
)
def test_is_valid_trace_id(text: str, ok: bool) -> None:
    assert ids.is_valid_trace_id(text) is ok


def test_new_trace_id() -> None:
    made = {ids.new_trace_id() for _ in range(100)}
    assert len(made) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) and ids.is_valid_trace_id(t) for t in made)


def test_time_of_invalid_id_is_refused() -> None:
    with pytest.raises(ValueError, match="not a request id"):
        ids.request_id_time_ms("nope")
