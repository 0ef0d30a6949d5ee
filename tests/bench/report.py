"""Result lines, medians over runs, and the scaling table (pure functions)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: fields every line carries, in this order; then the extra fields, sorted
MAIN_FIELDS = ("n", "wall_s", "jobs_per_s", "p50_ms", "p99_ms", "peak_rss_mb")


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == int(value) and abs(value) >= 1000:
            return str(int(value))
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 0.01 and value else f"{value:.2f}"
    return str(value)


def line(name: str, result: Mapping[str, Any]) -> str:
    """`name=... n=... wall_s=... jobs_per_s=... p50_ms=... p99_ms=... peak_rss_mb=... extra=...`"""
    parts = [f"name={name}"]
    parts += [f"{k}={fmt_value(result.get(k))}" for k in MAIN_FIELDS]
    parts += [f"{k}={fmt_value(result[k])}" for k in sorted(result) if k not in MAIN_FIELDS]
    return " ".join(parts)


def median_result(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Field by field median of numeric fields (others from the first run)."""
    if not runs:
        return {}
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            med = statistics.median(values)
            out[key] = int(med) if all(isinstance(v, int) for v in values) else float(med)
        else:
            out[key] = values[0]
    return out


def mem_per_job_kb(result: Mapping[str, Any]) -> float | None:
    peak, base, n = result.get("peak_rss_mb"), result.get("base_rss_mb"), result.get("n")
    if not isinstance(peak, int | float) or not isinstance(base, int | float) or not n:
        return None
    return max(peak - base, 0.0) * 1024.0 / float(n)


def _scaling_point(results: Mapping[str, Mapping[str, Any]], kind: str, n: int) -> Any:
    r = results.get(f"{kind}-{n}")
    return r if r is not None and r.get("n") in (n, n + 1) else None  # not a --quick run


def has_scaling_rows(results: Mapping[str, Mapping[str, Any]], sizes: Iterable[int]) -> bool:
    return any(_scaling_point(results, k, n) for n in sizes for k in ("chain", "fanout"))


def scaling_table(results: Mapping[str, Mapping[str, Any]], sizes: Iterable[int]) -> str:
    """A Markdown table of jobs/s and memory for chain-N and fanout-N, by N."""
    head = (
        "| N | chain jobs/s | chain peak MB | chain KB/job | fanout jobs/s | fanout peak MB "
        "| fanout KB/job |\n|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for n in sizes:
        cells = [f"{n:,}"]
        for kind in ("chain", "fanout"):
            r = _scaling_point(results, kind, n)
            if r is None:
                cells += ["-", "-", "-"]
                continue
            cells += [
                fmt_value(r.get("jobs_per_s")),
                fmt_value(r.get("peak_rss_mb")),
                fmt_value(mem_per_job_kb(r)),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
