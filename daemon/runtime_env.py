"""What every traverser shares: the journal, the job factory, the global job slots, settings.

Kept apart from the runtime so that traversers depend on this small surface, not on the
runtime that owns them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from daemon.builder import Limits
from daemon.jobs.registry import JobFactory
from daemon.model import Event, JobState

if TYPE_CHECKING:
    from daemon.journal.store import Journal


class Wakeable(Protocol):
    def wake(self) -> None: ...


class Slots:
    """The global cap on running jobs (`max_running_jobs`), shared by every traverser."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self._waiters: dict[Wakeable, None] = {}

    def try_acquire(self, who: Wakeable) -> bool:
        if self.used < self.limit:
            self.used += 1
            return True
        self._waiters[who] = None
        return False

    def release(self, by: Wakeable | None = None) -> bool:
        """Give a slot back. `by`, the releaser, is not woken: it schedules right after.
        True if others were waiting for a slot (so `by` should not take it back at once)."""
        self.used = max(0, self.used - 1)
        free = self.limit - self.used
        others = False
        # wake every waiter: each takes what it can and re-registers if it gets nothing
        if free > 0 and self._waiters:
            waiters = list(self._waiters)
            self._waiters.clear()
            for w in waiters:
                if w is not by:
                    w.wake()
                    others = True
        return others

    def set_limit(self, limit: int) -> None:
        """A reload's new `max_running_jobs`: more room wakes the waiters at once; less lets
        the running jobs finish and starts no new one until `used` is below the limit."""
        self.limit = max(1, limit)
        if self.used < self.limit and self._waiters:
            waiters = list(self._waiters)
            self._waiters.clear()
            for w in waiters:
                w.wake()

    def forget(self, who: Wakeable) -> None:
        self._waiters.pop(who, None)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    work_dir: str | None = None
    output_limit: int = 65536
    job_stop_grace: float = 5.0
    #: the daemon's directory for jobs' temporary files (None = the system's)
    tmp_dir: str | None = None
    #: real path of the journal and id of this boot, for the jobs' markers (daemon.orphans)
    journal: str = ""
    boot_id: str = ""


class RuntimeEnv:
    def __init__(
        self,
        journal: Journal,
        factory: JobFactory,
        *,
        limits: Limits,
        slots: Slots,
        settings: Settings,
        publish: Callable[[Iterable[Event]], None],
        metrics: Any = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.factory = factory
        self.limits = limits
        self.slots = slots
        self.settings = settings
        self._publish = publish
        self.metrics = metrics
        self.now = now
        self.last_journal_error = ""
        self.last_journal_error_at = 0.0
        #: the writer's commit count when that error happened: a later commit clears it
        self.commits_at_error = 0

    def publish(self, events: Iterable[Event]) -> None:
        self._publish(events)

    def journal_failed(self, exc: BaseException) -> None:
        self.last_journal_error = f"{type(exc).__name__}: {exc}"
        self.last_journal_error_at = time.monotonic()
        self.commits_at_error = int(getattr(getattr(self.journal, "stats", None), "commits", 0))

    def journal_healthy(self) -> bool:
        stats = getattr(self.journal, "stats", None)
        healthy = getattr(stats, "healthy", True)
        return bool(healthy)

    def metrics_job_started(self, type_name: str) -> None:
        if self.metrics is not None:
            self.metrics.job_try_started()

    def metrics_job_ended(self, type_name: str, state: JobState, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.job_try_finished(type_name, state.value, seconds)
