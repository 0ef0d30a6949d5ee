"""The benchmark suite's own helpers (no benchmark runs here): result lines, medians,
percentiles, the scaling table, workload names, and the generated specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.builder import build
from daemon.jobs.registry import JobFactory
from daemon.specstore import SpecStore
from tests.bench import report
from tests.bench.__main__ import expand, resolve
from tests.bench.harness import percentile
from tests.bench.specs import items, write_specs


@pytest.mark.parametrize(
    ("values", "pct", "want"),
    [
        ([], 50, 0.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 50, 50.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_percentile(values: list[float], pct: float, want: float) -> None:
    assert percentile(values, pct) == want


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (True, "true"),
        (12, "12"),
        (12345.0, "12345"),
        (1234.6, "1235"),
        (12.34, "12.3"),
        (1.234, "1.23"),
        (0.004567, "0.00457"),
        (0.0, "0.00"),
        ("x", "x"),
    ],
)
def test_fmt_value(value: object, text: str) -> None:
    assert report.fmt_value(value) == text


def test_line_puts_main_fields_first_then_extras_sorted() -> None:
    got = report.line("chain-1000", {"zeta": 1, "n": 1000, "wall_s": 0.5, "alpha": 2.0})
    assert got == (
        "name=chain-1000 n=1000 wall_s=0.50 jobs_per_s=- p50_ms=- p99_ms=- peak_rss_mb=-"
        " alpha=2.00 zeta=1"
    )


def test_median_result() -> None:
    runs = [
        {"n": 10, "wall_s": 3.0, "note": "a"},
        {"n": 10, "wall_s": 1.0, "note": "b"},
        {"n": 10, "wall_s": 2.0, "note": "c"},
    ]
    assert report.median_result(runs) == {"n": 10, "wall_s": 2.0, "note": "a"}
    assert report.median_result([]) == {}


def test_scaling_table_uses_only_full_size_runs() -> None:
    results = {
        "chain-100": {"n": 100, "jobs_per_s": 900.0, "peak_rss_mb": 50.0, "base_rss_mb": 49.0},
        "fanout-100": {"n": 101, "jobs_per_s": 2000.0, "peak_rss_mb": 51.0, "base_rss_mb": 49.0},
        "fanout-1000": {"n": 201, "jobs_per_s": 1.0},  # a --quick run: not a scaling point
    }
    assert report.has_scaling_rows(results, [100, 1000])
    assert not report.has_scaling_rows({"fanout-1000": results["fanout-1000"]}, [1000])
    table = report.scaling_table(results, [100, 1000]).splitlines()
    assert table[2] == "| 100 | 900 | 50.0 | 10.2 | 2000 | 51.0 | 20.3 |"
    assert table[3] == "| 1,000 | - | - | - | - | - | - |"


def test_workload_names() -> None:
    assert expand(["scaling"], quick=True) == [
        "chain-100",
        "chain-1000",
        "chain-10000",
        "fanout-100",
        "fanout-1000",
        "fanout-10000",
    ]
    assert expand(["chain-1000", "chain-1000"], quick=False) == ["chain-1000"]
    assert "resume-100k" in expand(["all"], quick=False)
    resolve("fanout-12345-full", quick=False)
    for bad in ("chain-7", "nope", "fanout-x"):
        with pytest.raises(ValueError):
            resolve(bad, quick=False)


async def test_generated_specs_lint_and_build(tmp_path: Path) -> None:
    factory = JobFactory({})
    store = SpecStore(write_specs(tmp_path), factory)
    assert [d.format() for d in store.load() if d.is_error] == []
    specs = store.sequences()
    line = await build(specs, "line-100", {}, factory)
    assert len(line.jobs) == 100
    preds = line.predecessors()
    assert sorted(len(p) for p in preds.values()) == [0] + [1] * 99  # one line
    fan = await build(specs, "fanout", {"items": items(7)}, factory)
    assert len(fan.jobs) == 8
    resume = await build(specs, "resume-100", {"fast": "1ms", "slow": "1h"}, factory)
    assert len(resume.jobs) == 100
