"""The runtime: creates, resumes, stops, suspends, retries requests; one traverser per chain.

Every request that runs has exactly one traverser task, started and awaited here (`_drive`).
Control calls that change a running chain are messages to its traverser; calls on a chain that
is not running (retry, skip, resume, stop of a suspended one) are journal writes followed,
when the chain should go on, by a new traverser.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from daemon import builder, logctx
from daemon.chain import Chain, JobKind, ScopeVars
from daemon.errors import BadRequest, Conflict, NotFound, Unavailable
from daemon.ids import new_request_id
from daemon.journal.errors import AlreadyExists
from daemon.journal.store import Journal, LoadedRequest, RequestRecord
from daemon.model import Event, JobState, RequestState, RequestView, RunningJob
from daemon.runtime_env import RuntimeEnv
from daemon.spec import OnInterrupt, SequenceSpec
from daemon.traverser import ChainState, Control, Traverser

#: reason recorded when a chain is suspended by the daemon's shutdown (resumed at start)
SHUTDOWN_REASON = "daemon shutdown"
HELD_PREFIX = "held: "
#: interrupted chains resumed at once at start
RESUME_CONCURRENCY = 32


class Runtime:
    def __init__(self, env: RuntimeEnv, specs: Callable[[], Mapping[str, SequenceSpec]]) -> None:
        self.env = env
        self.journal: Journal = env.journal
        self.specs = specs
        self.traversers: dict[str, Traverser] = {}
        self.drivers: dict[str, asyncio.Task[None]] = {}
        self.shutting_down = False
        #: creations under way (past the shutting-down check): a shutdown waits for them
        self._creating: set[asyncio.Future[None]] = set()
        self.resumed = 0
        self._lock = asyncio.Lock()  # control calls that read-then-write the journal

    # ---- creating

    async def create(
        self,
        *,
        type: str,
        args: dict[str, Any],
        user: str,
        trace_id: str,
        idempotency_key: str | None,
        body_hash: str,
    ) -> tuple[RequestView, bool]:
        if self.shutting_down:
            raise Unavailable("spind is shutting down; no new requests")
        with self._creation():
            if idempotency_key is not None:
                replay = await self._idempotent(idempotency_key, body_hash)
                if replay is not None:
                    return replay, False
            chain = await self.plan(type=type, args=args, require_request=True)
            now = self.env.now()
            rec = RequestRecord(
                id=new_request_id(),
                type=type,
                user=user,
                args=chain.args,
                state=RequestState.PENDING,
                created_at=now,
                trace_id=trace_id,
            )
            try:
                # created and RUNNING in one commit: the traverser starts it at once
                events = await self.journal.create_request(
                    rec, chain, idempotency_key=idempotency_key, body_hash=body_hash, started_at=now
                )
            except AlreadyExists:
                if idempotency_key is None:
                    raise
                replay = await self._idempotent(idempotency_key, body_hash)
                if replay is None:
                    raise
                return replay, False
            self.env.publish(events)
            logger.info(
                "request created: {} by {}", type, user, request_id=rec.id, action="request_created"
            )
            state = ChainState(state={j: JobState.PENDING for j in chain.jobs})
            self._start(rec.id, chain, ScopeVars(chain), state, user)
            # the request as its commit left it (no read back: the traverser has not run yet)
            view = RequestView(
                id=rec.id,
                type=rec.type,
                state=RequestState.RUNNING,
                user=rec.user,
                args=rec.args,
                created_at=datetime.fromtimestamp(rec.created_at, UTC),
                started_at=datetime.fromtimestamp(now, UTC),
                total_jobs=sum(1 for j in chain.jobs.values() if j.kind == JobKind.JOB),
                trace_id=rec.trace_id,
            )
            return view, True

    @contextlib.contextmanager
    def _creation(self) -> Iterator[None]:
        """A creation under way: a shutdown waits until it is over."""
        marker = asyncio.get_running_loop().create_future()
        self._creating.add(marker)
        try:
            yield
        finally:
            self._creating.discard(marker)
            marker.set_result(None)

    async def _idempotent(self, key: str, body_hash: str) -> RequestView | None:
        found = await self.journal.find_idempotent(key)
        if found is None:
            return None
        rid, first_hash = found
        if first_hash != body_hash:
            raise Conflict("this Idempotency-Key was used with another body", {"requestId": rid})
        return await self.journal.get_view(rid)

    async def plan(self, *, type: str, args: dict[str, Any], require_request: bool = True) -> Chain:
        specs = self.specs()
        if type not in specs:
            raise BadRequest(f"unknown request type {type!r}", {"type": type})
        return await builder.build(
            specs,
            type,
            args,
            self.env.factory,
            limits=self.env.limits,
            require_request=require_request,
        )

    # ---- running

    async def _restart(
        self, rid: str, chain: Chain, values: ScopeVars, st: ChainState, user: str
    ) -> None:
        """Journal RUNNING first (so that the caller's answer already says so), then run."""
        await self._set_state(
            rid,
            RequestState.RUNNING,
            expect=(
                RequestState.PENDING,
                RequestState.SUSPENDED,
                RequestState.RUNNING,
                RequestState.FAIL,
                RequestState.STOPPED,
            ),
        )
        self._start(rid, chain, values, st, user)

    def _start(
        self,
        rid: str,
        chain: Chain,
        values: ScopeVars,
        st: ChainState,
        user: str,
    ) -> None:
        if self.shutting_down:
            # journaled RUNNING but the daemon is stopping: SUSPENDED as a shutdown leaves
            # every chain (a driver of its own, which the shutdown waits for); resumed at the
            # next start
            logger.info("shutting down: {} will start at the next start", rid, request_id=rid)
            task = asyncio.get_running_loop().create_task(
                self._set_state(
                    rid,
                    RequestState.SUSPENDED,
                    expect=(RequestState.RUNNING,),
                    reason=SHUTDOWN_REASON,
                ),
                name=f"suspend:{rid}",
            )
            self.drivers[rid] = task
            task.add_done_callback(lambda _: self.drivers.pop(rid, None))
            return
        trav = Traverser(self.env, rid, chain, values, st, user=user)
        self.traversers[rid] = trav
        task = asyncio.get_running_loop().create_task(self._drive(rid, trav), name=f"chain:{rid}")
        self.drivers[rid] = task

    async def _drive(self, rid: str, trav: Traverser) -> None:
        """Run a chain whose request is journaled RUNNING; journal its final state."""
        try:
            with logctx.context(request_id=rid):
                final = await trav.run()
                state, reason = trav.outcome()
                assert state == final
                await asyncio.shield(
                    self._set_state(rid, state, expect=(RequestState.RUNNING,), reason=reason)
                )
        except Exception as exc:
            # a bug, not a fault of the jobs: park the request for an operator instead of
            # leaving it RUNNING with nobody driving it
            logger.exception("traverser of {} crashed", rid, action="traverser_crash")
            with contextlib.suppress(Exception):
                await self._set_state(
                    rid,
                    RequestState.SUSPENDED,
                    expect=(RequestState.RUNNING, RequestState.PENDING),
                    reason=f"internal error: {type(exc).__name__}: {exc}; resume it to go on",
                )
        finally:
            self.traversers.pop(rid, None)
            self.drivers.pop(rid, None)

    async def _set_state(
        self,
        rid: str,
        state: RequestState,
        *,
        expect: Collection[RequestState],
        reason: str = "",
    ) -> None:
        await self._journal_until_done(
            lambda: self.journal.set_request_state(
                rid, state, expect=expect, at=self.env.now(), reason=reason
            ),
            f"request state {state}",
        )

    async def _journal_until_done(
        self, write: Callable[[], Awaitable[list[Event]]], what: str
    ) -> None:
        """Journal `write` (and publish its events), trying again while the journal fails;
        a refusal (Conflict) is raised."""
        delay = 0.2
        while True:
            try:
                events = await write()
                self.env.publish(events)
                return
            except Conflict:
                raise
            except Exception as exc:
                self.env.journal_failed(exc)
                logger.error("cannot journal {}: {}", what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ---- resume at start

    async def resume_all(self) -> int:
        """Resume every chain interrupted by a shutdown or a crash. Returns how many.

        Chains are independent: RESUME_CONCURRENCY of them are resumed at once, so that their
        journal reads follow each other without gaps and their writes share commits.
        """
        ids = await self.journal.unfinished_request_ids()
        sem = asyncio.Semaphore(RESUME_CONCURRENCY)

        async def one(rid: str) -> bool:
            async with sem:
                return await self._resume_one(rid)

        results = await asyncio.gather(*(one(rid) for rid in ids), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        count = sum(1 for r in results if r is True)
        self.resumed = count
        return count

    async def _resume_one(self, rid: str) -> bool:
        """One interrupted chain: its interrupted tries and its new state (RUNNING, or
        SUSPENDED if a job must wait for an operator) in one commit, then its traverser."""
        loaded = await self.journal.load_request(rid)
        if loaded is None:
            return False
        rec = loaded.record
        if rec.state == RequestState.SUSPENDED and rec.reason != SHUTDOWN_REASON:
            return False  # suspended by a user or held: waits for an operator
        interrupts, held = await self._interrupted(loaded)
        state = RequestState.SUSPENDED if held else RequestState.RUNNING
        await self._journal_until_done(
            lambda: self.journal.resume_request(
                rid,
                interrupts,
                state,
                expect=(RequestState.RUNNING, RequestState.PENDING, RequestState.SUSPENDED),
                reason=held,
                at=self.env.now(),
            ),
            f"the resume of {rid}",
        )
        for jid, try_no, job_state, error in interrupts:
            row = loaded.jobs.get(jid)
            if row is not None:
                row.state = job_state  # as journaled now: no need to load the request again
            logger.warning(
                "try {} of {} was interrupted: {}",
                try_no,
                jid,
                error,
                request_id=rid,
                job_id=jid,
                action="try_interrupted",
            )
        if held:
            return False
        values, st = self._loaded_state(loaded)
        self._start(rid, loaded.chain, values, st, rec.user)
        return True

    async def _interrupted(
        self, loaded: LoadedRequest
    ) -> tuple[list[tuple[str, int, JobState, str]], str]:
        """Tries left RUNNING by an older boot, with what each node's onInterrupt makes of
        them: (job id, try, state the job is left in, error) each, and a hold reason if a job
        must wait for an operator."""
        held = ""
        rid = loaded.record.id
        boot = self.journal.boot_id
        log = None
        out: list[tuple[str, int, JobState, str]] = []
        for jid, try_no, try_boot in loaded.running_tries:
            if try_boot == boot:
                continue
            job = loaded.chain.jobs.get(jid)
            mode = job.on_interrupt if job is not None else OnInterrupt.RERUN
            state = JobState.PENDING
            error = "interrupted: the daemon stopped or crashed during this try"
            if mode == OnInterrupt.HOLD:
                state = JobState.FAIL
                held = (
                    f"{HELD_PREFIX}job {job.name if job else jid} ({jid}) try {try_no} was "
                    "interrupted and must not run twice unseen: retry or skip it"
                )
            elif mode == OnInterrupt.FAIL and job is not None:
                if log is None:
                    log = await self.journal.job_log(rid)
                epoch = loaded.jobs[jid].seq_try
                failed = 1 + sum(
                    1
                    for r in log
                    if r.job_id == jid and r.sequence_try == epoch and r.state == JobState.FAIL
                )
                state = JobState.PENDING if failed <= job.retry else JobState.FAIL
                error = "interrupted (onInterrupt: fail): counted as a failed try"
            out.append((jid, try_no, state, error))
        return out, held

    def _loaded_state(self, loaded: LoadedRequest) -> tuple[ScopeVars, ChainState]:
        """What a traverser of a loaded request starts from: the outputs of its completed
        jobs, each job's state, tries, run epoch and retry budget."""
        chain = loaded.chain
        values = ScopeVars(chain)
        for jid in loaded.completed_order:
            job = chain.jobs.get(jid)
            row = loaded.jobs.get(jid)
            if job is not None and row is not None and row.state == JobState.COMPLETE:
                values.apply_outputs(job, row.outputs)
        failed = loaded.failed
        budget = {j: n for j, r in loaded.jobs.items() if (n := failed.get((j, r.seq_try), 0))}
        st = ChainState(
            state={j: r.state for j, r in loaded.jobs.items()},
            tries={j: r.tries for j, r in loaded.jobs.items()},
            epoch={j: max(r.seq_try, 1) for j, r in loaded.jobs.items()},
            budget=budget,
            scope_tries=dict(loaded.scope_tries),
        )
        # jobs the journal shows RUNNING were swept above; anything else odd runs again
        for j, s in st.state.items():
            if s == JobState.RUNNING:
                st.state[j] = JobState.PENDING
        return values, st

    async def _run_loaded(self, loaded: LoadedRequest) -> None:
        """Run a loaded request again (resume, retry, skip): RUNNING journaled, then run."""
        values, st = self._loaded_state(loaded)
        await self._restart(loaded.record.id, loaded.chain, values, st, loaded.record.user)

    # ---- control

    async def _view(self, rid: str) -> RequestView:
        view = await self.journal.get_view(rid)
        if view is None:
            raise NotFound(f"no request {rid}", {"id": rid})
        return view

    async def _wait_driver(self, rid: str) -> None:
        task = self.drivers.get(rid)
        if task is not None:
            await asyncio.shield(task)

    async def stop(self, rid: str, *, user: str) -> RequestView:
        async with self._lock:
            view = await self._view(rid)
            if view.state.finished:
                raise Conflict(f"request {rid} already ended {view.state}", {"state": view.state})
            trav = self.traversers.get(rid)
            if trav is not None:
                trav.post(Control("stop", reason=f"stopped by {user}"))
            else:
                await self._set_state(
                    rid,
                    RequestState.STOPPED,
                    expect=(RequestState.SUSPENDED, RequestState.PENDING),
                    reason=f"stopped by {user}",
                )
        await self._wait_driver(rid)
        return await self._view(rid)

    async def suspend(self, rid: str, *, user: str) -> RequestView:
        async with self._lock:
            view = await self._view(rid)
            trav = self.traversers.get(rid)
            if trav is None or view.state not in (RequestState.RUNNING, RequestState.PENDING):
                raise Conflict(f"request {rid} is {view.state}, not running", {"state": view.state})
            trav.post(Control("suspend", reason=f"suspended by {user}"))
        await self._wait_driver(rid)
        return await self._view(rid)

    async def resume(self, rid: str, *, user: str) -> RequestView:
        if self.shutting_down:
            raise Unavailable("spind is shutting down")
        async with self._lock:
            view = await self._view(rid)
            if view.state != RequestState.SUSPENDED or rid in self.traversers:
                raise Conflict(
                    f"request {rid} is {view.state}, not suspended", {"state": view.state}
                )
            if view.reason.startswith(HELD_PREFIX):
                raise Conflict(f"request {rid} is {view.reason}", {"state": view.state})
            loaded = await self.journal.load_request(rid)
            assert loaded is not None
            await self._run_loaded(loaded)
        return await self._view(rid)

    async def retry(self, rid: str, *, user: str, jobs: list[str] | None) -> RequestView:
        if self.shutting_down:
            raise Unavailable("spind is shutting down")
        async with self._lock:
            view = await self._view(rid)
            held = view.state == RequestState.SUSPENDED and view.reason.startswith(HELD_PREFIX)
            if view.state not in (RequestState.FAIL, RequestState.STOPPED) and not held:
                raise Conflict(
                    f"request {rid} is {view.state}: only FAIL, STOPPED or held requests can be "
                    "retried",
                    {"state": view.state},
                )
            if rid in self.traversers:
                raise Conflict(f"request {rid} is still running")
            loaded = await self.journal.load_request(rid)
            assert loaded is not None
            chain = loaded.chain
            if jobs:
                unknown = [j for j in jobs if j not in chain.jobs]
                if unknown:
                    raise BadRequest(
                        f"no such jobs in {rid}: {', '.join(unknown)}", {"jobs": unknown}
                    )
                reset = [
                    j
                    for j in _downstream(chain, jobs)
                    if not (
                        chain.jobs[j].kind == JobKind.DEFERRED
                        and loaded.jobs[j].state == JobState.COMPLETE
                    )
                ]
            else:
                reset = [
                    j
                    for j, r in loaded.jobs.items()
                    if r.state in (JobState.FAIL, JobState.STOPPED, JobState.PENDING)
                ]
            events = await self.journal.reset_jobs(
                rid, reset, scope_id=None, scope_try=None, at=self.env.now()
            )
            self.env.publish(events)
            logger.info(
                "request retried by {}: {} jobs reset",
                user,
                len(reset),
                request_id=rid,
                action="request_retry",
            )
            loaded = await self.journal.load_request(rid)
            assert loaded is not None
            await self._run_loaded(loaded)
        return await self._view(rid)

    async def skip(self, rid: str, job_id: str, *, user: str, reason: str) -> RequestView:
        async with self._lock:
            view = await self._view(rid)
            if rid in self.traversers:
                raise Conflict(
                    f"request {rid} is running; suspend it before skipping a job",
                    {"state": view.state},
                )
            loaded = await self.journal.load_request(rid)
            assert loaded is not None
            row = loaded.jobs.get(job_id)
            if row is None:
                raise NotFound(f"no job {job_id} in request {rid}", {"jobId": job_id})
            if row.state not in (JobState.FAIL, JobState.STOPPED, JobState.PENDING):
                raise Conflict(
                    f"job {job_id} is {row.state}; only failed, stopped or held "
                    "jobs can be skipped",
                    {"state": row.state},
                )
            events = await self.journal.skip_job(
                rid, job_id, user=user, reason=reason, at=self.env.now()
            )
            self.env.publish(events)
            logger.info(
                "job skipped by {}: {}",
                user,
                reason,
                request_id=rid,
                job_id=job_id,
                action="job_skip",
            )
            loaded = await self.journal.load_request(rid)
            assert loaded is not None
            blocked = [
                j for j, r in loaded.jobs.items() if r.state in (JobState.FAIL, JobState.STOPPED)
            ]
            held = view.state == RequestState.SUSPENDED and view.reason.startswith(HELD_PREFIX)
            ended = view.state in (RequestState.FAIL, RequestState.STOPPED) or held
            if not blocked and ended and not self.shutting_down:
                await self._run_loaded(loaded)
        return await self._view(rid)

    # ---- reads and shutdown

    def running(self) -> list[RunningJob]:
        out: list[RunningJob] = []
        for trav in list(self.traversers.values()):
            out.extend(trav.running_jobs())
        return out

    def job_status(self, rid: str, jid: str) -> str:
        trav = self.traversers.get(rid)
        return trav.job_status(jid) if trav is not None else ""

    def counts(self) -> tuple[int, int]:
        return len(self.traversers), sum(len(t.running) for t in self.traversers.values())

    async def shutdown(self, grace: float) -> None:
        """Stop starting jobs, give running ones `grace` seconds, then interrupt the rest;
        every unfinished chain ends SUSPENDED, to be resumed at the next start."""
        self.shutting_down = True
        for trav in list(self.traversers.values()):
            trav.post(Control("shutdown", grace=grace, reason=SHUTDOWN_REASON))
        # a creation past its check may still commit (its chain is then suspended at once by
        # a driver of its own): wait for those, then for every driver
        while self._creating or self.drivers:
            if self._creating:
                await asyncio.wait(list(self._creating))
            tasks = list(self.drivers.values())
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)


def _downstream(chain: Chain, roots: list[str]) -> list[str]:
    succs = chain.successors()
    seen: dict[str, None] = {}
    todo = list(roots)
    while todo:
        j = todo.pop()
        if j in seen:
            continue
        seen[j] = None
        todo.extend(succs.get(j, ()))
    return list(seen)
