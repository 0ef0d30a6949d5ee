"""daemon.metrics: values land in the exposition that `GET /metrics` serves."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.metrics import Metrics, loop_lag_monitor
from daemon.model import RequestState


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_by_state_are_all_exported_and_reset() -> None:
    m = Metrics(process=False)
    got = samples(m)
    for state in RequestState:
        assert got[("spind_requests", (("state", state.value),))] == 0
    m.set_requests({"RUNNING": 3, "COMPLETE": 10})
    m.set_requests({"RUNNING": 1})
    got = samples(m)
    assert got[("spind_requests", (("state", "RUNNING"),))] == 1
    assert got[("spind_requests", (("state", "COMPLETE"),))] == 0


def test_job_tries_and_durations() -> None:
    m = Metrics(process=False)
    m.job_try_finished("shell", "COMPLETE", 0.2)
    m.job_try_finished("shell", "COMPLETE", 2.0)
    m.job_try_finished("shell", "FAIL", 40.0)
    m.job_try_finished("noop", "COMPLETE", -1.0)  # a clock step back is clamped to 0
    got = samples(m)
    labels = (("outcome", "COMPLETE"), ("type", "shell"))
    assert got[("spind_job_tries_total", labels)] == 2
    assert got[("spind_job_tries_total", (("outcome", "FAIL"), ("type", "shell")))] == 1
    assert got[("spind_job_duration_seconds_count", (("type", "shell"),))] == 3
    assert got[("spind_job_duration_seconds_sum", (("type", "shell"),))] == pytest.approx(42.2)
    assert got[("spind_job_duration_seconds_bucket", (("le", "1.0"), ("type", "shell")))] == 1
    assert got[("spind_job_duration_seconds_sum", (("type", "noop"),))] == 0


def test_gauges_counters_and_histograms() -> None:
    m = Metrics(process=False)
    m.jobs_running.inc(4)
    m.jobs_running.dec()
    m.journal_committed(0.003, 17)
    m.journal_read("loop")
    m.journal_read("loop")
    m.journal_read("thread")
    m.chains_resumed.inc(2)
    m.api_request("POST", "/api/v1/requests", 201)
    m.api_request("POST", "/api/v1/requests", 201)
    m.api_request("GET", "/api/v1/requests/{id}", 404)
    m.spec_reload(ok=True)
    m.spec_reload(ok=False)
    m.spec_reload(ok=False)
    m.config_reload(ok=False)
    got = samples(m)
    assert got[("spind_jobs_running", ())] == 3
    assert got[("spind_journal_commit_seconds_count", ())] == 1
    assert got[("spind_journal_commit_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("spind_journal_commit_seconds_bucket", (("le", "0.0025"),))] == 0
    assert got[("spind_journal_batch_size_sum", ())] == 17
    assert got[("spind_journal_reads_total", (("where", "loop"),))] == 2
    assert got[("spind_journal_reads_total", (("where", "thread"),))] == 1
    assert got[("spind_chains_resumed_total", ())] == 2
    post = (("method", "POST"), ("route", "/api/v1/requests"), ("status", "201"))
    assert got[("spind_api_requests_total", post)] == 2
    get = (("method", "GET"), ("route", "/api/v1/requests/{id}"), ("status", "404"))
    assert got[("spind_api_requests_total", get)] == 1
    assert got[("spind_spec_reloads_total", (("result", "ok"),))] == 1
    assert got[("spind_spec_reloads_total", (("result", "error"),))] == 2
    assert got[("spind_config_reloads_total", (("result", "error"),))] == 1
    assert ("spind_config_reloads_total", (("result", "ok"),)) not in got


def test_registries_are_private() -> None:
    a, b = Metrics(process=False), Metrics(process=False)
    a.chains_resumed.inc()
    assert samples(b)[("spind_chains_resumed_total", ())] == 0


def test_process_metrics_are_included_by_default() -> None:
    body, _ = Metrics().render()
    assert b"process_resident_memory_bytes" in body


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        (None, "text/plain"),
        ("text/plain", "text/plain"),
        ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text"),
    ],
)
def test_render_content_type(accept: str | None, kind: str) -> None:
    m = Metrics(process=False)
    body, content_type = m.render(accept)
    assert content_type.startswith(kind)
    assert b"spind_jobs_running" in body
    if kind.startswith("application/openmetrics"):
        assert body.endswith(b"# EOF\n")


def test_set_loop_lag() -> None:
    m = Metrics(process=False)
    m.set_loop_lag(0.25)
    assert m.current_lag_ms == 250.0
    assert samples(m)[("spind_event_loop_lag_seconds", ())] == 0.25


class LagRecorder(Metrics):
    def __init__(self) -> None:
        super().__init__(process=False)
        self.seen: list[float] = []

    def set_loop_lag(self, seconds: float) -> None:
        self.seen.append(seconds)
        super().set_loop_lag(seconds)


async def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    m = LagRecorder()
    task = asyncio.create_task(loop_lag_monitor(m, interval=0.01))
    await asyncio.sleep(0)  # the monitor starts its first sleep
    time.sleep(0.2)  # block the loop: the monitor's timer fires at least 0.19 s late
    for _ in range(200):
        await asyncio.sleep(0.005)
        if m.seen:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert m.seen[0] >= 0.18
    assert all(lag >= 0 for lag in m.seen)
    assert m.current_lag_ms == m.seen[-1] * 1000
    assert samples(m)[("spind_event_loop_lag_seconds", ())] == m.seen[-1]


async def test_loop_lag_monitor_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        await loop_lag_monitor(Metrics(process=False), interval=0)


@pytest.mark.parametrize(
    ("value", "first_le"),
    [
        (0.0, "0.01"),
        (0.01, "0.01"),
        (0.010001, "0.05"),
        (1.0, "1.0"),
        (14400.0, "14400.0"),
        (1e9, "+Inf"),
    ],
)
def test_a_value_counts_in_the_first_bucket_it_fits(value: float, first_le: str) -> None:
    m = Metrics(process=False)
    m.job_try_started()
    m.job_try_finished("noop", "COMPLETE", value)
    got = samples(m)
    buckets = {
        labels[0][1]: n
        for (name, labels), n in got.items()
        if name == "spind_job_duration_seconds_bucket"
    }
    les = list(buckets)
    assert [buckets[le] for le in les] == [
        float(les.index(le) >= les.index(first_le)) for le in les
    ]
    assert got[("spind_jobs_running", ())] == 0


def test_loop_histogram_needs_ascending_distinct_buckets() -> None:
    from prometheus_client import CollectorRegistry

    from daemon.loopmetrics import LoopMetrics

    hot = LoopMetrics(CollectorRegistry())
    for bad in ([], [1, 1], [2, 1]):
        with pytest.raises(ValueError, match="ascending and distinct"):
            hot.histogram("x", "x", bad)
