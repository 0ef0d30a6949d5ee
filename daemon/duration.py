"""Go-style durations ("500ms", "3s", "1m30s", "2h") as seconds."""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """Not a duration: expected a number and a unit, e.g. 500ms, 3s, 1m30s, 2h."""


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds; "0" alone is zero.

    >>> parse_duration("1m30s")
    90.0
    """
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    if not s:
        raise DurationError(f"empty duration {text!r}")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise DurationError(
                f"invalid duration {text!r}: expected a number and a unit "
                "(ns, us, ms, s, m, h), e.g. 500ms, 3s, 1m30s, 2h"
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise DurationError(f"invalid duration {text!r}")
    if sign < 0:
        raise DurationError(f"invalid duration {text!r}: must not be negative")
    return total


def format_duration(seconds: float) -> str:
    """Seconds back to a short Go-style string (for display)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    out = ""
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    if h:
        out += f"{h}h"
    if m:
        out += f"{m}m"
    frac = seconds - whole
    if s or frac or not out:
        out += f"{s + frac:g}s"
    return out
