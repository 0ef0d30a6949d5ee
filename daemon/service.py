"""The daemon as the API sees it (daemon.api.protocol.ControlService): runtime + journal reads.

Thin: each method is one runtime call or one journal read, plus the live parts (job status,
running jobs) that only the runtime knows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from daemon import __version__
from daemon.api.protocol import FindFilter
from daemon.chain import Chain
from daemon.errors import NotFound
from daemon.events import BACKLOG_PAGE, EventBus
from daemon.journal.store import RequestFilter
from daemon.model import (
    ArgView,
    Event,
    HealthView,
    JobLogRow,
    JobState,
    RequestDetail,
    RequestTypeView,
    RequestView,
    RunningJob,
)
from daemon.runtime import Runtime
from daemon.spec import ACL
from daemon.specstore import SpecStore


class Service:
    version = __version__

    def __init__(
        self,
        runtime: Runtime,
        specs: SpecStore,
        bus: EventBus,
        *,
        metrics: Any = None,
        loop_lag_ms: Any = None,
    ) -> None:
        self.runtime = runtime
        self.journal = runtime.journal
        self.specs = specs
        self.bus = bus
        self._metrics = metrics
        self._loop_lag_ms = loop_lag_ms
        #: the errors of the last config reload (empty: it was in force); set by the daemon
        self.config_errors: list[str] = []

    @property
    def shutting_down(self) -> bool:
        return self.runtime.shutting_down

    @shutting_down.setter
    def shutting_down(self, value: bool) -> None:
        self.runtime.shutting_down = value

    async def create_request(
        self,
        *,
        type: str,
        args: dict[str, Any],
        user: str,
        trace_id: str,
        idempotency_key: str | None,
        body_hash: str,
    ) -> tuple[RequestView, bool]:
        return await self.runtime.create(
            type=type,
            args=args,
            user=user,
            trace_id=trace_id,
            idempotency_key=idempotency_key,
            body_hash=body_hash,
        )

    async def plan(self, *, type: str, args: dict[str, Any]) -> Chain:
        return await self.runtime.plan(type=type, args=args)

    async def get_request(self, request_id: str) -> RequestDetail:
        detail = await self.journal.get_request(request_id)
        if detail is None:
            raise NotFound(f"no request {request_id}", {"id": request_id})
        interrupted: dict[str, list[int]] = {}
        if any(j.tries > 1 for j in detail.jobs):
            for row in await self.journal.job_log(request_id):
                if row.state == JobState.INTERRUPTED:
                    interrupted.setdefault(row.job_id, []).append(row.try_)
        for job in detail.jobs:
            live = self.runtime.job_status(request_id, job.id)
            cut = interrupted.get(job.id)
            if cut:
                note = "interrupted: try " + ", ".join(map(str, cut))
                live = (
                    f"{live} ({note}; resumed)" if live else f"{note}; resumed as try {job.tries}"
                )
            job.status = live
        return detail

    async def find_requests(self, f: FindFilter) -> list[RequestView]:
        return await self.journal.find_requests(
            RequestFilter(
                type=f.type or None,
                user=f.user or None,
                states=list(f.states),
                args=dict(f.args),
                since=f.since,
                until=f.until,
                limit=f.limit,
                offset=f.offset,
            )
        )

    async def stop(self, request_id: str, *, user: str) -> RequestView:
        return await self.runtime.stop(request_id, user=user)

    async def suspend(self, request_id: str, *, user: str) -> RequestView:
        return await self.runtime.suspend(request_id, user=user)

    async def resume(self, request_id: str, *, user: str) -> RequestView:
        return await self.runtime.resume(request_id, user=user)

    async def retry(self, request_id: str, *, user: str, jobs: list[str] | None) -> RequestView:
        return await self.runtime.retry(request_id, user=user, jobs=jobs)

    async def skip(self, request_id: str, job_id: str, *, user: str, reason: str) -> RequestView:
        return await self.runtime.skip(request_id, job_id, user=user, reason=reason)

    async def job_log(self, request_id: str, job_id: str | None) -> list[JobLogRow]:
        rows = await self.journal.job_log(request_id, job_id)
        if not rows:
            detail = await self.journal.get_request(request_id)
            if detail is None:
                raise NotFound(f"no request {request_id}", {"id": request_id})
            if job_id is not None and all(j.id != job_id for j in detail.jobs):
                raise NotFound(f"no job {job_id} in request {request_id}", {"jobId": job_id})
        return rows

    def events(self, request_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        def backlog(rid: str, after: int) -> Awaitable[tuple[list[Event], bool] | None]:
            return self.journal.backlog(rid, after, BACKLOG_PAGE)

        return self.bus.follow(request_id, after_seq, backlog)

    def running(self) -> list[RunningJob]:
        return self.runtime.running()

    def request_types(self) -> list[RequestTypeView]:
        out = []
        for seq in self.specs.sequences().values():
            if not seq.request:
                continue
            args: list[ArgView] = []
            for kind, group in (
                ("required", seq.args.required),
                ("optional", seq.args.optional),
                ("static", seq.args.static),
            ):
                for a in group:
                    if a is not None and a.name:
                        args.append(ArgView(name=a.name, kind=kind, desc=a.desc, default=a.default))
            out.append(RequestTypeView(name=seq.name, desc=seq.desc, args=args, file=seq.filename))
        return sorted(out, key=lambda t: t.name)

    def request_type_acl(self, type: str) -> list[ACL] | None:
        seq = self.specs.sequences().get(type)
        if seq is None:
            return None
        return [a for a in seq.acl if a is not None]

    async def request_type_of(self, request_id: str) -> str:
        live = self.runtime.traversers.get(request_id)
        if live is not None:  # a request being run exists: no journal read needed
            return live.chain.request_type
        view = await self.journal.get_view(request_id)
        if view is None:
            raise NotFound(f"no request {request_id}", {"id": request_id})
        return view.type

    def health(self) -> HealthView:
        stats = self.journal.stats
        lag = float(self._loop_lag_ms()) if callable(self._loop_lag_ms) else 0.0
        requests, jobs = self.runtime.counts()
        env = self.runtime.env
        recent_error = (
            env.last_journal_error
            if time.monotonic() - env.last_journal_error_at < 30
            and stats.commits <= env.commits_at_error  # nothing committed since
            else ""
        )
        writable = bool(stats.healthy) and not recent_error
        return HealthView(
            ok=writable and lag < 5000 and not self.shutting_down,
            journal_writable=writable,
            loop_lag_ms=round(lag, 3),
            shutting_down=self.shutting_down,
            specs_ok=self.specs.ok,
            specs_errors=list(self.specs.errors),
            specs_loads=self.specs.loads,
            config_ok=not self.config_errors,
            config_errors=list(self.config_errors),
            running_requests=requests,
            running_jobs=jobs,
            last_journal_error=stats.last_error or recent_error,
        )

    def api_call(self, method: str, route: str, status: int) -> None:
        if self._metrics is not None:
            self._metrics.api_request(method, route, status)

    def metrics(self) -> tuple[bytes, str]:
        if self._metrics is None:
            return b"", "text/plain; version=0.0.4"
        body, ctype = self._metrics.render()
        return bytes(body), str(ctype)
