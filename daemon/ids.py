"""Identifiers: request ids (ULID-style), job ids and trace ids.

A request id is 26 characters of Crockford base32: 48 bits of milliseconds since the epoch,
then 80 random bits. Ids sort by creation time as plain strings, are safe in URLs and file
names, and ids made within one millisecond by one generator still increase (the random part
of the previous id is incremented).
"""

from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Callable

_trace_random = random.Random()  # seeded from the system once, at import

#: Crockford's base32 alphabet: no I, L, O or U.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_BITS = 48
_RAND_BITS = 80
_RAND_MAX = (1 << _RAND_BITS) - 1
_TIME_MAX = (1 << _TIME_BITS) - 1

_REQUEST_ID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_JOB_ID = re.compile(r"j[0-9]{1,12}")
_TRACE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


class UlidGenerator:
    """Makes increasing ULIDs; `clock_ms` and `random_bits` are injectable for tests."""

    def __init__(
        self,
        clock_ms: Callable[[], int] | None = None,
        random_bits: Callable[[int], int] | None = None,
    ) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._random_bits = random_bits or secrets.randbits
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        ms = self._clock_ms()
        if ms <= self._last_ms:
            # Same millisecond (or the clock stepped back): keep the last time and count up.
            ms = self._last_ms
            rand = self._last_rand + 1
            if rand > _RAND_MAX:
                ms += 1
                rand = self._random_bits(_RAND_BITS) >> 1
        else:
            # A fresh millisecond: the top random bit is clear, leaving room to count up.
            rand = self._random_bits(_RAND_BITS) >> 1
        if not 0 <= ms <= _TIME_MAX:
            raise ValueError(f"time {ms} ms is outside the ULID range")
        self._last_ms, self._last_rand = ms, rand
        return _encode((ms << _RAND_BITS) | rand, 26)


_default = UlidGenerator()


def new_request_id() -> str:
    """A new request id, greater than every id this process made before."""
    return _default.new()


def request_id_time_ms(request_id: str) -> int:
    """The creation time (ms since the epoch) encoded in a valid request id."""
    if not is_valid_request_id(request_id):
        raise ValueError(f"not a request id: {request_id!r}")
    value = 0
    for ch in request_id[:10]:
        value = (value << 5) | ALPHABET.index(ch)
    return value


def is_valid_request_id(s: str) -> bool:
    return isinstance(s, str) and _REQUEST_ID.fullmatch(s) is not None


def is_valid_job_id(s: str) -> bool:
    """Job ids are `j` and a number: `j1`, `j12`."""
    return isinstance(s, str) and _JOB_ID.fullmatch(s) is not None


def new_trace_id() -> str:
    """32 lowercase hex characters (the W3C trace-context size). Trace ids tie log lines
    together and need not be secret: the Mersenne Twister, not the system's entropy source,
    whose system call gives up the GIL (and a busy journal thread may keep it for a while)."""
    return f"{_trace_random.getrandbits(128):032x}"


def is_valid_trace_id(s: str) -> bool:
    """1-128 characters of letters, digits and `.`, `_`, `:`, `-`."""
    return isinstance(s, str) and _TRACE_ID.fullmatch(s) is not None
