"""Prometheus metrics on a private registry, served by `GET /metrics`.

Each daemon (and each test) owns one :class:`Metrics`; nothing touches prometheus-client's
global registry. The metrics updated per job try, per journal commit and per API call are
loop-owned plain numbers (`daemon.loopmetrics`: no lock, no label lookup per update); the rest
are prometheus-client objects. Label values must stay few: `route` is the route's template
(`/api/v1/requests/{id}`), never the raw path; `type` is a job type; `outcome` a try's end state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from daemon.loopmetrics import LoopMetrics
from daemon.model import RequestState

#: Job tries last from milliseconds (noop) to hours (deploys).
JOB_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600)
#: A journal commit is an fsync or two.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: Records written by one group commit.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """spind's metrics; attributes are the prometheus-client objects, methods the usual updates."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Gauge(
            "spind_requests", "Requests in the journal, by state.", ["state"], registry=r
        )
        hot = LoopMetrics(r)
        self.jobs_running = hot.gauge("spind_jobs_running", "Job tries running now.")
        self.job_tries = hot.counter(
            "spind_job_tries", "Job tries finished, by job type and outcome.", ["type", "outcome"]
        )
        self.job_duration = hot.histogram(
            "spind_job_duration_seconds",
            "Duration of finished job tries, by job type.",
            JOB_DURATION_BUCKETS,
            ["type"],
        )
        self.journal_commit = hot.histogram(
            "spind_journal_commit_seconds", "Time to commit one journal batch.", COMMIT_BUCKETS
        )
        self.journal_batch = hot.histogram(
            "spind_journal_batch_size", "Records written per journal commit.", BATCH_BUCKETS
        )
        self.journal_reads = hot.counter(
            "spind_journal_reads",
            "Journal reads, by where they ran: loop (a small read on the event loop's own"
            " connection) or thread (the reader thread: large reads, and small ones that"
            " went over the loop's budget).",
            ["where"],
        )
        self.api_requests = hot.counter(
            "spind_api_requests",
            "API requests served, by method, route template and status.",
            ["method", "route", "status"],
        )
        self.loop_lag = Gauge(
            "spind_event_loop_lag_seconds",
            "How late the event loop last woke a timer (a busy or blocked loop).",
            registry=r,
        )
        self.chains_resumed = Counter(
            "spind_chains_resumed", "Chains resumed from the journal at start.", registry=r
        )
        self.spec_reloads = Counter(
            "spind_spec_reloads", "Spec (re)loads, by result (ok, error).", ["result"], registry=r
        )
        self.config_reloads = Counter(
            "spind_config_reloads",
            "Config reloads (SIGHUP), by result (ok, error: the old config stays).",
            ["result"],
            registry=r,
        )
        if process:
            ProcessCollector(registry=r)
        self.current_lag_ms = 0.0
        self.set_requests({})

    def set_requests(self, counts: Mapping[str, int]) -> None:
        """Set every state's count at once; states not in `counts` become 0."""
        for state in RequestState:
            self.requests.labels(state=state.value).set(counts.get(state.value, 0))
        for name, n in counts.items():
            if name not in RequestState.__members__:
                self.requests.labels(state=name).set(n)

    def job_try_started(self) -> None:
        self.jobs_running.inc()

    def job_try_finished(self, job_type: str, outcome: str, seconds: float) -> None:
        """A try ended (it was counted running by `job_try_started`)."""
        self.jobs_running.dec()
        self.job_tries.inc((job_type, outcome))
        self.job_duration.observe(max(seconds, 0.0), (job_type,))

    def journal_committed(self, seconds: float, records: int) -> None:
        self.journal_commit.observe(max(seconds, 0.0))
        self.journal_batch.observe(records)

    def journal_read(self, where: str) -> None:
        self.journal_reads.inc((where,))

    def api_request(self, method: str, route: str, status: int) -> None:
        self.api_requests.inc((method, route, str(status)))

    def spec_reload(self, ok: bool) -> None:
        self.spec_reloads.labels(result="ok" if ok else "error").inc()

    def config_reload(self, ok: bool) -> None:
        self.config_reloads.labels(result="ok" if ok else "error").inc()

    def set_loop_lag(self, seconds: float) -> None:
        self.current_lag_ms = seconds * 1000.0
        self.loop_lag.set(seconds)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type); OpenMetrics when the `Accept` header asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


async def loop_lag_monitor(metrics: Metrics, interval: float = 0.5) -> None:
    """Sleep `interval` again and again and record how late each wake-up was; until cancelled."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        metrics.set_loop_lag(max(0.0, loop.time() - start - interval))
