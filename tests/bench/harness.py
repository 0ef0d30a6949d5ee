"""The runtime in-process, wired as `daemon.app.Daemon` wires it, plus measuring helpers.

`Rig` opens the real journal (a file in a fresh directory, default settings), records a boot,
loads and lints the benchmark specs, and makes the RuntimeEnv and Runtime exactly as the daemon
does (job factory, slots, event bus, metrics, loguru writing INFO lines to a log file). It can
time journal commits as the traverser sees them: `Probe` wraps the journal's `job_started` and
`job_finished` and stamps the moment each call returns, i.e. when its transaction committed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from daemon import __version__
from daemon.builder import Limits
from daemon.events import EventBus
from daemon.jobs.registry import JobFactory
from daemon.journal.store import Journal, TryEnd
from daemon.logsetup import setup_logging
from daemon.metrics import Metrics
from daemon.model import JobState, RequestState
from daemon.runtime import Runtime
from daemon.runtime_env import RuntimeEnv, Settings, Slots
from daemon.specstore import SpecStore
from tests.bench.specs import write_specs


def rss_mb() -> float:
    """Resident memory now (VmRSS), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


_End = tuple[str, bool, list[str]]


def _complete_at(log: list[tuple[float, str, list[_End]]]) -> dict[tuple[str, str], float]:
    return {(rid, job_id): t for t, rid, ends in log for job_id, complete, _ in ends if complete}


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(pct / 100.0 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Probe:
    """Commit times (perf_counter) of RUNNING and COMPLETE rows, keyed by (request, job).

    While the workload runs, the wrappers only append one record per journal call (the
    time and the call's rows, not a dict entry per job: the probe should cost the measured
    loop next to nothing); `started`, `completed` and `ended` are worked out on first use.
    """

    #: (time, request id, job ids) of committed RUNNING rows
    _starts: list[tuple[float, str, list[str]]] = field(default_factory=list)
    #: (time, request id, ends) when try ends were asked for, and when they committed; an end
    #: is (job id, whether the try COMPLETEd, ids of the jobs started in the same commit)
    _asked: list[tuple[float, str, list[_End]]] = field(default_factory=list)
    _committed: list[tuple[float, str, list[_End]]] = field(default_factory=list)

    def install(self, journal: Journal) -> None:
        """Wrap the journal's try writes (one job's or several jobs' at once)."""
        started, many_started = journal.job_started, journal.jobs_started
        ended = journal.queue_tries_ended
        clock = time.perf_counter

        async def job_started(request_id: str, job_id: str, *args: Any, **kw: Any) -> Any:
            events = await started(request_id, job_id, *args, **kw)
            self._starts.append((clock(), request_id, [job_id]))
            return events

        async def jobs_started(
            request_id: str, starts: Sequence[tuple[str, int, int]], **kw: Any
        ) -> Any:
            events = await many_started(request_id, starts, **kw)
            self._starts.append((clock(), request_id, [job_id for job_id, _, _ in starts]))
            return events

        def queue_tries_ended(request_id: str, ends: Sequence[TryEnd], **kw: Any) -> Any:
            # what the maps need, not the TryEnds (their outputs and output texts would stay
            # alive for the whole run: memory the daemon does not hold)
            brief = [
                (e.job_id, e.log_state == JobState.COMPLETE, [s[0] for s in e.then_start])
                for e in ends
            ]
            self._asked.append((clock(), request_id, brief))

            def committed(fut: Any) -> None:
                if not fut.cancelled() and fut.exception() is None:
                    self._committed.append((clock(), request_id, brief))

            fut = ended(request_id, ends, **kw)
            fut.add_done_callback(committed)  # runs before the traverser hears of the commit
            return fut

        journal.job_started = job_started  # type: ignore[method-assign]
        journal.jobs_started = jobs_started  # type: ignore[method-assign]
        journal.queue_tries_ended = queue_tries_ended  # type: ignore[method-assign]

    @functools.cached_property
    def started(self) -> dict[tuple[str, str], float]:
        marks = [(t, rid, jid) for t, rid, jids in self._starts for jid in jids]
        marks += [  # started in the same commit as an end
            (t, rid, started_id)
            for t, rid, ends in self._committed
            for _job_id, _complete, then_start in ends
            for started_id in then_start
        ]
        marks.sort(key=lambda m: m[0])  # a later try's start wins
        return {(rid, jid): t for t, rid, jid in marks}

    @functools.cached_property
    def completed(self) -> dict[tuple[str, str], float]:
        return _complete_at(self._committed)

    @functools.cached_property
    def ended(self) -> dict[tuple[str, str], float]:
        """When the traverser asked for a try's COMPLETE row (the job had returned)."""
        return _complete_at(self._asked)

    def handoffs_ms(
        self, request_id: str, preds: dict[str, list[str]], *, since_end: bool = False
    ) -> list[float]:
        """Completion-to-next-start latencies: for every job with predecessors, the time from
        the last predecessor's COMPLETE commit (with `since_end`: from the moment it returned
        and its COMPLETE row was asked for) to the job's RUNNING commit."""
        marks = self.ended if since_end else self.completed
        out = []
        for jid, ps in preds.items():
            start = self.started.get((request_id, jid))
            if start is None or not ps:
                continue
            ends = [marks.get((request_id, p)) for p in ps]
            done = [e for e in ends if e is not None]
            if done:
                out.append((start - max(done)) * 1000.0)
        return out


class Rig:
    """One journal + runtime in this process. Use `async with Rig.open(dir) as rig`."""

    def __init__(self, root: Path, journal: Journal, runtime: Runtime, specs: SpecStore) -> None:
        self.root = root
        self.journal = journal
        self.runtime = runtime
        self.specs = specs
        #: peak RSS (MB) when the last `run` ended
        self.peak_rss_mb = 0.0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        root: Path,
        *,
        synchronous: str = "NORMAL",
        max_running_jobs: int = 256,
        journal_path: Path | None = None,
        log: bool = True,
        extra_specs: dict[str, str] | None = None,
    ) -> AsyncIterator[Rig]:
        """With `log`, loguru is set up as the daemon sets it up (INFO, text) writing to
        `root/spind.log`, and removed at the end; without, loguru is left as it is."""
        root.mkdir(parents=True, exist_ok=True)
        log_file = open(root / "spind.log", "a")  # noqa: SIM115 - closed below
        if log:
            setup_logging("INFO", "text", stream=log_file, env={})
        journal = await Journal.open(journal_path or root / "spind.db", synchronous=synchronous)
        try:
            await journal.start_boot(os.getpid(), __version__)
            factory = JobFactory({})
            spec_dir = write_specs(root / "specs")
            for name, text in (extra_specs or {}).items():
                (spec_dir / name).write_text(text)
            specs = SpecStore(spec_dir, factory)
            errors = [d.format() for d in specs.load() if d.is_error]
            if errors:
                raise RuntimeError("bench specs do not lint: " + "; ".join(errors))
            bus = EventBus()
            env = RuntimeEnv(
                journal,
                factory,
                # fanout-100000 is 100,001 jobs: past max_jobs_per_request's default
                limits=Limits(max_jobs=1_000_000),
                slots=Slots(max_running_jobs),
                settings=Settings(work_dir=str(root)),
                publish=bus.publish,
                metrics=Metrics(),
            )
            runtime = Runtime(env, specs.sequences)
            rig = cls(root, journal, runtime, specs)
            try:
                yield rig
            finally:
                await runtime.shutdown(0.0)
        finally:
            await journal.close()
            if log:
                logger.remove()
            log_file.close()

    async def create(self, type: str, **args: Any) -> str:
        view, _ = await self.runtime.create(
            type=type,
            args=args,
            user="bench",
            trace_id="bench",
            idempotency_key=None,
            body_hash="",
        )
        return view.id

    async def finish(self, rid: str) -> RequestState:
        """Wait for the request's traverser to end; its final state as journaled."""
        task = self.runtime.drivers.get(rid)
        if task is not None:
            await task
        view = await self.journal.get_view(rid)
        assert view is not None
        return view.state

    async def run(self, type: str, **args: Any) -> tuple[str, float]:
        """Create a request and wait until it ends: (request id, seconds from create to end)."""
        t0 = time.perf_counter()
        rid = await self.create(type, **args)
        state = await self.finish(rid)
        wall = time.perf_counter() - t0
        # the peak while the request ran, before a workload works out its figures (loading the
        # request back, the probe's maps: memory of the bench, not of the daemon)
        self.peak_rss_mb = peak_rss_mb()
        if state != RequestState.COMPLETE:
            raise RuntimeError(f"{type} ended {state}; see {self.root / 'spind.log'}")
        return rid, wall


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0
