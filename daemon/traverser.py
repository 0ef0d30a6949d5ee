"""One coroutine per running chain: decides what runs next, journals, then acts.

The traverser owns all state of its chain and changes it only in :meth:`Traverser.run`, one
message at a time (job tries ending, journal writes committed, timers, control calls). Work
that waits (a journal write, a job try, an expansion) runs in its own task and reports back
through the inbox. The one exception: a launch task stores its TryRunner in `self.running`
so that a stop that arrives while the try starts can reach it (no await between check and set).

Write-ahead: a try's RUNNING row is committed before its job object is even made; a job's
successors are released only after its COMPLETE row is committed; an expansion's jobs are
committed with the expansion in one transaction. Launches and completions of many jobs are
written concurrently, so the journal's writer commits them in groups.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from daemon import policy
from daemon.builder import expand
from daemon.chain import Chain, ChainJob, ChainPatch, JobKind, ScopeVars
from daemon.errors import BuildError
from daemon.jobs.base import JobResult
from daemon.journal.errors import IllegalTransition
from daemon.journal.rows import TryEnd
from daemon.model import Event, JobState, RequestState, RunningJob, ts_to_dt
from daemon.ready import Parked, ReadyQueue
from daemon.runner import TryRunner, make_context
from daemon.runtime_env import RuntimeEnv

_DONE = frozenset({JobState.COMPLETE, JobState.SKIPPED})
#: seconds a chain stalled by a journal fault waits before it tries a launch again by itself
STALL_RETRY = 5.0


# ---- inbox messages


@dataclass
class TryEnded:
    job_id: str
    try_no: int
    result: JobResult
    reason: str | None  # why we stopped it, if we did


@dataclass
class LaunchFailed:
    job_id: str
    error: BaseException


@dataclass
class Written:
    apply: Callable[[], None]


@dataclass
class WriteFailed:
    what: str
    error: BaseException


@dataclass
class Timer:
    apply: Callable[[], None]


@dataclass
class Control:
    kind: str  # "stop" | "suspend" | "shutdown"
    grace: float = 0.0
    reason: str = ""


@dataclass
class Wake:
    pass


Message = TryEnded | LaunchFailed | Written | WriteFailed | Timer | Control | Wake


@dataclass(slots=True)
class _End:
    """A try end waiting for `_flush_ends`: its row, what to do once committed, and what
    to undo first if the journal refuses it."""

    end: TryEnd
    done: Callable[[], None]
    refused: Callable[[], None] | None


@dataclass
class ChainState:
    """What the journal says about a chain when its traverser starts."""

    state: dict[str, JobState]
    tries: dict[str, int] = field(default_factory=dict)
    epoch: dict[str, int] = field(default_factory=dict)
    budget: dict[str, int] = field(default_factory=dict)
    scope_tries: dict[str, int] = field(default_factory=dict)


class Traverser:
    def __init__(
        self,
        env: RuntimeEnv,
        request_id: str,
        chain: Chain,
        values: ScopeVars,
        st: ChainState,
        *,
        user: str = "",
    ) -> None:
        self.env = env
        self.rid = request_id
        self.chain = chain
        self.values = values
        self.user = user
        self.state = st.state
        self.tries = st.tries
        self.epoch = st.epoch
        self.budget = st.budget
        self.scope_tries = st.scope_tries
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._preds: dict[str, list[str]] | None = None  # built when first needed
        self.succs = chain.successors()
        self.pending_preds: dict[str, int] = {}
        self.ready = ReadyQueue()  # predecessors done, in the order they became ready
        self.parked = Parked()  # ready, waiting for room in their `each` group
        self._inside: dict[str, list[str]] = {}  # scope -> its jobs (cleared on expansion)
        self.running: dict[str, TryRunner | None] = {}
        self.busy: set[str] = set()  # a write or expansion in flight for this job
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.blocked_scopes: set[str] = set()
        self.resetting: set[str] = set()
        self.inflight = 0
        self.mode = "run"
        self.stop_reason = ""
        self.failed = False
        self.held = ""
        self.timed_out = False
        self.journal_stalled = False
        self.waiting_slot = False
        self.copies: dict[str, list[tuple[str, str]]] = {}
        self.copy_open: dict[str, int] = {}
        self.copy_started: set[str] = set()
        self.group_active: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ends: list[_End] = []  # try ends to journal after this batch of messages
        self._init_counts()

    # ---- setup

    @property
    def preds(self) -> dict[str, list[str]]:
        """Predecessors of every job: needed only for expansions and sequence retries."""
        if self._preds is None:
            self._preds = self.chain.predecessors()
        return self._preds

    def _done(self, jid: str) -> bool:
        return self.state.get(jid) in _DONE

    def _init_counts(self) -> None:
        state = self.state
        for jid in self.chain.jobs:
            state.setdefault(jid, JobState.PENDING)
        pending = dict.fromkeys(self.chain.jobs, 0)
        for a, b in self.chain.edges:  # one pass over the edges: a resume starts 1000s
            if state.get(a) not in _DONE:
                pending[b] += 1
        self.pending_preds = pending
        self._count_copies(list(self.chain.jobs))
        for jid, count in self.pending_preds.items():
            if count == 0 and self.state[jid] == JobState.PENDING:
                self.ready.add(jid)

    def _count_copies(self, jobs: list[str]) -> None:
        by_scope: dict[str, list[tuple[str, str]]] = {}  # jobs of a scope share the answer
        for jid in jobs:
            sid = self.chain.jobs[jid].scope
            cps = by_scope.get(sid)
            if cps is None:
                cps = by_scope[sid] = policy.enclosing_copies(self.chain, sid)
            self.copies[jid] = cps  # never changed in place
            if self._done(jid):
                continue
            for gid, csid in cps:
                self.copy_open[csid] = self.copy_open.get(csid, 0) + 1
                self.group_active.setdefault(gid, 0)
                if self.state[jid] != JobState.PENDING or self.tries.get(jid, 0) > 0:
                    self._activate(gid, csid)

    def _activate(self, gid: str, csid: str) -> None:
        if csid not in self.copy_started:
            self.copy_started.add(csid)
            self.group_active[gid] = self.group_active.get(gid, 0) + 1
            for j in self.parked.release_copy(gid, csid):
                self.ready.add(j)  # the copy runs: its other waiting jobs may start too

    def _unpark(self, gid: str) -> None:
        """A group has room again: the copies that waited longest may start."""
        limit = self.chain.groups[gid].parallel
        room = 1 if limit is None else limit - self.group_active.get(gid, 0)
        for _ in range(max(room, 0)):
            jobs = self.parked.release_next(gid)
            if not jobs:
                return
            for j in jobs:
                self.ready.add(j)

    # ---- outside callers (same event loop)

    def post(self, msg: Message) -> None:
        self.inbox.put_nowait(msg)

    def wake(self) -> None:
        """A global job slot may be free."""
        self.post(Wake())

    def running_jobs(self) -> list[RunningJob]:
        out = []
        for jid, runner in self.running.items():
            if runner is None:
                continue
            job = self.chain.jobs[jid]
            out.append(
                RunningJob(
                    request_id=self.rid,
                    job_id=jid,
                    name=job.name,
                    type=job.type,
                    try_=runner.ctx.try_no,
                    started_at=ts_to_dt(runner.started_at) or ts_to_dt(time.time()),  # type: ignore[arg-type]
                    status=runner.status(),
                    request_type=self.chain.request_type,
                    user=self.user,
                )
            )
        return out

    def job_status(self, jid: str) -> str:
        runner = self.running.get(jid)
        return runner.status() if runner is not None else ""

    # ---- the loop

    async def run(self) -> RequestState:
        """Run the chain until it ends or is stopped, suspended or shut down; journal the end."""
        with logger.contextualize(request_id=self.rid):
            deadline = None
            if self.chain.timeout:
                deadline = asyncio.get_running_loop().call_later(
                    self.chain.timeout, self.post, Control("timeout", reason="request timed out")
                )
            try:
                self._schedule()
                inbox = self.inbox
                while not self._finished():
                    self._handle(await inbox.get())
                    # everything that arrived meanwhile, so that the try ends it brings share
                    # one journal write and the jobs they release one scheduling step
                    while not inbox.empty():
                        self._handle(inbox.get_nowait())
                    self._flush_ends()
                    self._schedule()
            finally:
                if deadline is not None:
                    deadline.cancel()
                for h in self.timers.values():
                    h.cancel()
                self.timers.clear()
                if self.waiting_slot:
                    self.env.slots.forget(self)
            final, reason = self._outcome()
            logger.info("chain ended {} {}", final, reason, action="chain_end")
            return final

    def outcome(self) -> tuple[RequestState, str]:
        return self._outcome()

    def _outcome(self) -> tuple[RequestState, str]:
        if self.held:
            return RequestState.SUSPENDED, self.held
        if self.timed_out:
            return RequestState.FAIL, "request timed out"
        if self.mode == "stop":
            return RequestState.STOPPED, self.stop_reason or "stopped"
        if self.mode in ("suspend", "shutdown"):
            return RequestState.SUSPENDED, self.stop_reason
        if all(self._done(j) for j in self.chain.jobs):
            return RequestState.COMPLETE, ""
        failed = [j for j, s in self.state.items() if s in (JobState.FAIL, JobState.STOPPED)]
        names = ", ".join(f"{self.chain.jobs[j].name} ({j})" for j in failed[:5])
        return RequestState.FAIL, f"failed: {names}" if names else "nothing more can run"

    def _finished(self) -> bool:
        if self.running or self.busy or self.inflight:
            return False
        if self.mode != "run":
            return True
        if self.timers or self.journal_stalled:
            return False
        if self.failed and self.chain.fail_fast:
            return True
        return not self.waiting_slot and not any(self._startable(j) for j in self.ready)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, TryEnded):
            self._on_try_end(msg)
        elif isinstance(msg, Written | Timer):
            msg.apply()
        elif isinstance(msg, LaunchFailed):
            self._on_launch_failed(msg)
        elif isinstance(msg, WriteFailed):
            self._on_write_failed(msg)
        elif isinstance(msg, Control):
            self._on_control(msg)
        elif isinstance(msg, Wake):
            self.waiting_slot = False

    # ---- scheduling

    def _scope_blocked(self, scope_id: str) -> bool:
        if not self.blocked_scopes:
            return False
        sid: str | None = scope_id
        while sid is not None:
            if sid in self.blocked_scopes:
                return True
            sid = self.chain.scopes[sid].parent
        return False

    def _full_group(self, jid: str) -> tuple[str, str] | None:
        """(group, copy) of an `each` group that runs `parallel` other copies already."""
        for gid, csid in self.copies.get(jid, ()):
            limit = self.chain.groups[gid].parallel
            if (
                limit is not None
                and csid not in self.copy_started
                and self.group_active.get(gid, 0) >= limit
            ):
                return gid, csid
        return None

    def _startable(self, jid: str) -> bool:
        if self._scope_blocked(self.chain.jobs[jid].scope):
            return False
        return self._full_group(jid) is None

    def _schedule(self) -> None:
        """Start what may start. O(jobs started or set aside): a job that may not start yet
        leaves the ready queue (parked by its group, or dropped while its scope is being reset:
        the reset makes it ready again), so it is not looked at again on every event."""
        if self.mode != "run" or self.journal_stalled or (self.failed and self.chain.fail_fast):
            return
        self.waiting_slot = False  # set again below if no slot is free
        launches: list[tuple[ChainJob, int, dict[str, Any]]] = []
        try:
            self._pick(launches)
        finally:
            if launches:
                self._start(launches)

    def _pick(self, launches: list[tuple[ChainJob, int, dict[str, Any]]]) -> None:
        """Claim the ready jobs that may start now (each claim counts against its `each`
        group before the next job is looked at) into `launches`."""
        while (jid := self.ready.pop()) is not None:
            if (
                self.state.get(jid) != JobState.PENDING
                or self.pending_preds.get(jid, 0) != 0
                or jid in self.timers
                or jid in self.busy
                or jid in self.running
            ):
                continue  # stale entry: it started, was reset or waits for a retry timer
            job = self.chain.jobs[jid]
            if self._scope_blocked(job.scope):
                continue  # its scope is being reset; the reset makes it ready again
            full = self._full_group(jid)
            if full is not None:
                self.parked.park(full[0], full[1], jid)
                continue
            if job.kind == JobKind.DEFERRED:
                self._expand(jid)
                continue
            if not self.env.slots.try_acquire(self):
                self.ready.push_front(jid)
                self.waiting_slot = True
                return
            launches.append((job, self._claim(jid), self.values.job_args(job)))

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _claim(self, jid: str) -> int:
        """Count a try of a job about to start (its slot is taken); its try number."""
        try_no = self.tries.get(jid, 0) + 1
        self.tries[jid] = try_no
        self.state[jid] = JobState.RUNNING
        self.running[jid] = None
        for gid, csid in self.copies.get(jid, ()):
            self._activate(gid, csid)
        return try_no

    def _unclaim(self, jid: str) -> None:
        """A claimed try whose RUNNING row was not written: the job did not start."""
        self.running.pop(jid, None)
        self.env.slots.release(by=self)
        self.tries[jid] = self.tries.get(jid, 1) - 1
        self.state[jid] = JobState.PENDING

    def _start(self, launches: list[tuple[ChainJob, int, dict[str, Any]]]) -> None:
        """Start claimed tries: one alone writes its own RUNNING row; several share one
        write (all commit or none), and each job runs once the write has committed."""
        if len(launches) == 1:
            job, try_no, args = launches[0]
            self._spawn(self._run_try(job, try_no, args), f"job:{self.rid}:{job.id}:{try_no}")
            return
        env = self.env
        starts = [(job.id, try_no, self.epoch.get(job.id, 1)) for job, try_no, _ in launches]

        async def go() -> None:
            try:
                events = await env.journal.jobs_started(self.rid, starts, at=env.now())
            except IllegalTransition:
                # the journal disagrees about one of them: let each write (or fail) alone
                for job, try_no, args in launches:
                    name = f"job:{self.rid}:{job.id}:{try_no}"
                    self._spawn(self._run_try(job, try_no, args), name)
                return
            except Exception as exc:
                for job, _, _ in launches:
                    self.post(LaunchFailed(job.id, exc))
                return
            env.publish(events)
            for job, try_no, args in launches:
                name = f"job:{self.rid}:{job.id}:{try_no}"
                self._spawn(self._run_try(job, try_no, args, journaled=True), name)

        self._spawn(go(), f"start:{self.rid}:{len(launches)}")

    def _claim_successors(self, jid: str) -> list[tuple[str, int]]:
        """Successors that `jid` completing makes ready and that may start at once, claimed
        now: their RUNNING rows are written in the same transaction as its COMPLETE row, so
        a line of jobs costs one commit per job, and each still starts only after both
        rows are committed. (job id, try) of each."""
        if self.mode != "run" or self.journal_stalled or (self.failed and self.chain.fail_fast):
            return []
        out: list[tuple[str, int]] = []
        slots = self.env.slots
        for s in self.succs.get(jid, ()):
            if (
                self.pending_preds.get(s) != 1
                or self.state.get(s) != JobState.PENDING
                or s in self.timers
                or s in self.busy
                or s in self.running
            ):
                continue
            job = self.chain.jobs[s]
            if (
                job.kind == JobKind.DEFERRED
                or self._scope_blocked(job.scope)
                or self._full_group(s) is not None
            ):
                continue
            if slots.used >= slots.limit or not slots.try_acquire(self):
                break  # the usual path starts it when a slot is free
            out.append((s, self._claim(s)))
        return out

    async def _run_try(
        self, job: ChainJob, try_no: int, args: dict[str, Any], *, journaled: bool = False
    ) -> None:
        """One try: its RUNNING row (unless `journaled` already), then the job itself."""
        env = self.env
        if not journaled:
            try:
                events = await env.journal.job_started(
                    self.rid, job.id, try_no, self.epoch.get(job.id, 1), env.now()
                )
            except Exception as exc:
                self.post(LaunchFailed(job.id, exc))
                return
            env.publish(events)
        ctx = make_context(
            self.rid,
            job.id,
            job.name,
            try_no,
            args,
            work_dir=env.settings.work_dir,
            output_limit=env.settings.output_limit,
            stop_grace=env.settings.job_stop_grace,
            tmp_dir=env.settings.tmp_dir,
            journal=env.settings.journal,
            boot_id=env.settings.boot_id,
        )
        try:
            obj = env.factory.make(job.type, name=job.name, with_=job.with_)
            if job.data:
                obj.deserialize(job.data)
        except Exception as exc:
            result = JobResult(state=JobState.FAIL, error=f"cannot make job {job.type!r}: {exc}")
            self.post(TryEnded(job.id, try_no, result, None))
            return
        runner = TryRunner(obj, ctx, timeout=job.timeout, type_name=job.type)
        if self.mode != "run":
            # stopped while the RUNNING row was being written: the job never ran
            reason = self.mode
            result = JobResult(state=JobState.STOPPED, error=f"not started: {reason}")
            self.post(TryEnded(job.id, try_no, result, reason))
            return
        self.running[job.id] = runner
        env.metrics_job_started(job.type)
        result = await runner.run()
        env.metrics_job_ended(job.type, result.state, time.monotonic() - runner.started_mono)
        self.post(TryEnded(job.id, try_no, result, runner.stop_reason))

    # ---- a try ended

    def _on_try_end(self, msg: TryEnded) -> None:
        jid = msg.job_id
        self.running.pop(jid, None)
        contended = self.env.slots.release(by=self)
        job = self.chain.jobs[jid]
        res = msg.result
        if msg.reason in ("suspend", "shutdown", "reset", "timeout-request"):
            log_state = JobState.STOPPED if msg.reason == "reset" else JobState.INTERRUPTED
            self._finish_write(msg, log_state, JobState.PENDING, self._to_pending)
            return
        if msg.reason == "stop":
            self._finish_write(msg, JobState.STOPPED, JobState.STOPPED, self._to_stopped)
            return
        if res.state == JobState.COMPLETE:
            # other chains wait for a slot: they get the one just freed, not our successor
            starts = [] if contended else self._claim_successors(jid)
            self._finish_write(
                msg, JobState.COMPLETE, JobState.COMPLETE, self._to_complete, starts=starts
            )
            return
        self.budget[jid] = self.budget.get(jid, 0) + 1
        decision = policy.job_retry(job, self.budget[jid], res.exit)
        if decision.retry:
            wait = decision.wait if self.mode == "run" else None
            self._finish_write(
                msg, JobState.FAIL, JobState.PENDING, lambda j: self._to_retry(j, wait)
            )
            return
        self._finish_write(msg, JobState.FAIL, JobState.FAIL, self._to_failed)

    def _finish_write(
        self,
        msg: TryEnded,
        log_state: JobState,
        job_state: JobState,
        then: Callable[[str], None],
        *,
        starts: list[tuple[str, int]] | None = None,
    ) -> None:
        """Journal a try's end (with the RUNNING rows of `starts`, claimed successors), then
        apply `then` and start the successors."""
        jid = msg.job_id
        res = msg.result
        claimed = list(starts or ())
        self.busy.add(jid)
        error = res.error
        if log_state == JobState.INTERRUPTED:
            error = error or f"interrupted by {msg.reason}"
        end = TryEnd(
            job_id=jid,
            try_no=msg.try_no,
            log_state=log_state,
            job_state=job_state,
            exit=res.exit,
            error=error,
            stdout=res.stdout,
            stderr=res.stderr,
            outputs=res.outputs if log_state == JobState.COMPLETE else {},
            then_start=tuple((s, t, self.epoch.get(s, 1)) for s, t in claimed),
        )

        def done() -> None:
            self.busy.discard(jid)
            if log_state == JobState.COMPLETE:
                self.values.apply_outputs(self.chain.jobs[jid], res.outputs)
            then(jid)
            for s, try_no in claimed:
                job = self.chain.jobs[s]
                args = self.values.job_args(job)  # after the outputs it may read
                self._spawn(
                    self._run_try(job, try_no, args, journaled=True), f"job:{self.rid}:{s}:{try_no}"
                )

        def refused() -> None:
            for s, _ in claimed:
                self._unclaim(s)  # `then` makes them ready again: they start the usual way
            claimed.clear()

        self._ends.append(_End(end, done, refused if claimed else None))

    def _flush_ends(self) -> None:
        """Journal the try ends queued by `_finish_write`: one alone as its own write,
        several in one write (all commit or none). Called after each batch of messages, and
        before any other write so that writes reach the journal in the order they were made."""
        ends, self._ends = self._ends, []
        if not ends:
            return
        if len(ends) == 1:
            e = ends[0]
            self._submit(f"finish {e.end.job_id}", self._ends_write([e.end]), e.done, e.refused)
            return

        def alone() -> None:
            # the journal refused the shared write: write each end alone, so that only the
            # one it disagrees with is refused
            for e in ends:
                self._submit(f"finish {e.end.job_id}", self._ends_write([e.end]), e.done, e.refused)

        def done() -> None:
            for e in ends:
                e.done()

        what = f"finish {len(ends)} tries"
        self._submit(what, self._ends_write([e.end for e in ends]), done, split=alone)

    def _ends_write(self, ends: list[TryEnd]) -> Callable[[], Awaitable[list[Event]]]:
        return lambda: self.env.journal.queue_tries_ended(self.rid, ends, at=self.env.now())

    def _write(
        self,
        what: str,
        write: Callable[[], Any],
        then: Callable[[], None],
        refused: Callable[[], None] | None = None,
    ) -> None:
        """Journal, then apply `then` in the loop. A failed write is retried until it commits
        (the chain stalls and the daemon reports itself unhealthy meanwhile): what the journal
        does not hold must not happen. A write the journal refuses (IllegalTransition) is not
        retried: `refused` (if given), then `then`, are applied as if it had committed."""
        self._flush_ends()  # queued try ends first: writes reach the journal in order
        self._submit(what, write, then, refused)

    def _submit(
        self,
        what: str,
        write: Callable[[], Any],
        then: Callable[[], None],
        refused: Callable[[], None] | None = None,
        *,
        split: Callable[[], None] | None = None,
    ) -> None:
        """`_write` without the flush. `split`: a write of several parts that the journal
        refuses is not applied at all; `split` (in the loop) writes its parts one by one."""
        self.inflight += 1
        was_refused = False

        def applied() -> None:
            self.inflight -= 1
            if was_refused and split is not None:
                split()
                return
            if was_refused and refused is not None:
                refused()
            then()

        async def go(first: Awaitable[Any] | None) -> None:
            nonlocal was_refused
            delay = 0.2
            while True:
                try:
                    if first is not None:
                        aw, first = first, None
                    else:
                        aw = write()
                    events = await aw
                    break
                except IllegalTransition as exc:
                    # the journal disagrees with us: a bug, not a fault that clears; keep going
                    if split is None:
                        logger.error("journal refused {}: {}", what, exc, action="journal_cas")
                    events = []
                    was_refused = True
                    break
                except Exception as exc:
                    self.post(WriteFailed(what, exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self.env.publish(events)
            self.post(Written(applied))

        try:
            first = write()
        except Exception as exc:  # refused before it was queued (say, the journal is closed)
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            first = failed
        if not isinstance(first, asyncio.Future):
            self._spawn(go(first), f"write:{self.rid}:{what}")
            return

        def committed(fut: asyncio.Future[Any]) -> None:
            # the common case needs no task: the write committed, tell the traverser
            if fut.cancelled() or fut.exception() is not None:
                self._spawn(go(fut), f"write:{self.rid}:{what}")  # refusal, fault: the slow path
                return
            self.env.publish(fut.result())
            self.post(Written(applied))

        first.add_done_callback(committed)

    # ---- what a journaled end does

    def _mark_done(self, jid: str) -> None:
        for gid, csid in self.copies.get(jid, ()):
            n = self.copy_open.get(csid, 0) - 1
            self.copy_open[csid] = n
            if n == 0 and csid in self.copy_started:
                self.group_active[gid] -= 1
                self._unpark(gid)
        for s in self.succs.get(jid, ()):
            self.pending_preds[s] -= 1
            if self.pending_preds[s] == 0 and self.state[s] == JobState.PENDING:
                self._make_ready(s)

    def _make_ready(self, jid: str) -> None:
        if jid not in self.timers and self.state[jid] == JobState.PENDING:
            self.ready.add(jid)

    def _to_complete(self, jid: str) -> None:
        self.state[jid] = JobState.COMPLETE
        self._mark_done(jid)
        self._check_resets()

    def _to_pending(self, jid: str) -> None:
        self.state[jid] = JobState.PENDING
        if self.pending_preds[jid] == 0:
            self._make_ready(jid)
        self._check_resets()

    def _to_stopped(self, jid: str) -> None:
        self.state[jid] = JobState.STOPPED
        self._check_resets()

    def _to_retry(self, jid: str, wait: float | None) -> None:
        self.state[jid] = JobState.PENDING
        if wait is None:  # shutting down: the next try happens after resume
            return
        if wait <= 0:
            self._make_ready(jid)
        else:
            loop = asyncio.get_running_loop()
            self.timers[jid] = loop.call_later(wait, self.post, Timer(lambda: self._retry_due(jid)))
        self._check_resets()

    def _retry_due(self, jid: str) -> None:
        self.timers.pop(jid, None)
        if self.state[jid] == JobState.PENDING and self.pending_preds[jid] == 0:
            self.ready.add(jid)

    def _to_failed(self, jid: str) -> None:
        self.state[jid] = JobState.FAIL
        job = self.chain.jobs[jid]
        # a stop ends the chain; a suspend or shutdown only pauses it, so the sequence retry is
        # journaled now (its jobs back to PENDING) and runs when the chain is resumed
        scope = None
        if self.mode != "stop":
            scope = policy.sequence_retry(self.chain, job, self.scope_tries)
        if scope is None:
            self.failed = True
            logger.warning("job {} ({}) failed for good", job.name, jid, action="job_failed")
            self._check_resets()
            return
        logger.info("sequence retry of scope {} after {} failed", scope, jid, action="seq_retry")
        self.blocked_scopes.add(scope)
        self.resetting.add(scope)
        inside = set(self._scope_jobs(scope))
        for other, runner in self.running.items():
            if other in inside and runner is not None:
                self._spawn(runner.stop("reset"), f"stop:{self.rid}:{other}")
        self._check_resets()

    def _check_resets(self) -> None:
        for scope in list(self.resetting):
            inside = self._scope_jobs(scope)
            if any(j in self.running or j in self.busy for j in inside):
                continue
            self.resetting.discard(scope)
            self._reset_scope(scope, inside)

    def _scope_jobs(self, scope: str) -> list[str]:
        inside = self._inside.get(scope)
        if inside is None:
            inside = self._inside[scope] = self.chain.scope_jobs(scope)
        return inside

    def _reset_scope(self, scope: str, inside: list[str]) -> None:
        jobs = [
            j for j in inside if not (self.chain.jobs[j].kind == JobKind.DEFERRED and self._done(j))
        ]
        scope_try = self.scope_tries.get(scope, 1) + 1
        wait = self.chain.scopes[scope].retry_wait
        for j in jobs:
            self.busy.add(j)
            h = self.timers.pop(j, None)
            if h is not None:
                h.cancel()
            self.ready.discard(j)

        async def write() -> list[Any]:
            return await self.env.journal.reset_jobs(
                self.rid, jobs, scope_id=scope, scope_try=scope_try, at=self.env.now()
            )

        def done() -> None:
            self.scope_tries[scope] = scope_try
            for j in jobs:
                self.busy.discard(j)
                was_done = self._done(j)
                self.state[j] = JobState.PENDING
                self.epoch[j] = self.epoch.get(j, 1) + 1
                self.budget[j] = 0
                if was_done:
                    for gid, csid in self.copies.get(j, ()):
                        n = self.copy_open.get(csid, 0)
                        self.copy_open[csid] = n + 1
                        if n == 0 and csid in self.copy_started:
                            self.group_active[gid] += 1
            affected = set(jobs)
            for j in jobs:
                affected.update(self.succs.get(j, ()))
            for j in affected:
                self.pending_preds[j] = sum(1 for p in self.preds[j] if not self._done(p))
            self.values.reset_scope(scope)

            def unblock() -> None:
                self.timers.pop(f"scope:{scope}", None)
                self.blocked_scopes.discard(scope)
                for j in jobs:
                    if self.pending_preds[j] == 0:
                        self._make_ready(j)

            if wait > 0 and self.mode == "run":
                loop = asyncio.get_running_loop()
                self.timers[f"scope:{scope}"] = loop.call_later(wait, self.post, Timer(unblock))
            else:
                unblock()

        self._write(f"reset {scope}", write, done)

    # ---- deferred expansion

    def _expand(self, jid: str) -> None:
        self.busy.add(jid)
        self.inflight += 1

        async def go() -> None:
            try:
                patch = await expand(
                    self.chain, jid, self.values, self.env.factory, limits=self.env.limits
                )
            except Exception as exc:
                self.inflight -= 1
                text = (
                    exc.message
                    if isinstance(exc, BuildError)
                    else f"expansion failed: {type(exc).__name__}: {exc}"
                )
                self.post(Written(lambda: self._expansion_failed(jid, text)))
                return
            self.inflight -= 1
            self.post(Timer(lambda: self._journal_patch(jid, patch)))

        self._spawn(go(), f"expand:{self.rid}:{jid}")

    def _journal_patch(self, jid: str, patch: ChainPatch) -> None:
        async def write() -> list[Any]:
            return await self.env.journal.apply_patch(self.rid, patch)

        self._write(f"expand {jid}", write, lambda: self._apply_patch(jid, patch))

    def _apply_patch(self, jid: str, patch: ChainPatch) -> None:
        self.busy.discard(jid)
        self.chain.apply(patch)
        self.values.apply_patch(patch)
        self._inside.clear()
        self._patch_edges(patch)
        new = [j.id for j in patch.jobs]
        for j in new:
            self.state[j] = JobState.PENDING
        for j in new:
            self.pending_preds[j] = sum(1 for p in self.preds[j] if not self._done(p))
        for s in self.succs[jid]:
            if s not in new:
                self.pending_preds[s] = sum(1 for p in self.preds[s] if not self._done(p))
        self._count_copies(new)
        self.state[jid] = JobState.COMPLETE
        self._mark_done(jid)
        logger.info("expanded {} into {} jobs", jid, len(new), action="expand")

    def _patch_edges(self, patch: ChainPatch) -> None:
        """Keep preds/succs in step with `chain.apply(patch)`: O(patch), not O(chain)."""
        removed = set(patch.remove_edges)
        for a in {a for a, _ in removed}:
            self.succs[a] = [b for b in self.succs.get(a, ()) if (a, b) not in removed]
        for job in patch.jobs:
            self.succs.setdefault(job.id, [])
        for a, b in patch.edges:
            self.succs.setdefault(a, []).append(b)
        preds = self._preds
        if preds is None:
            return  # built from the patched chain when first needed
        for b in {b for _, b in removed}:
            preds[b] = [a for a in preds.get(b, ()) if (a, b) not in removed]
        for job in patch.jobs:
            preds.setdefault(job.id, [])
        for a, b in patch.edges:
            preds.setdefault(b, []).append(a)

    def _expansion_failed(self, jid: str, message: str) -> None:
        self.busy.discard(jid)
        logger.error("expansion of {} failed: {}", jid, message, action="expand_failed")
        try_no = self.tries.get(jid, 0) + 1
        self.tries[jid] = try_no
        self.busy.add(jid)

        async def write() -> list[Any]:
            ev = await self.env.journal.job_started(
                self.rid, jid, try_no, self.epoch.get(jid, 1), self.env.now()
            )
            ev2 = await self.env.journal.job_finished(
                self.rid,
                jid,
                try_no,
                log_state=JobState.FAIL,
                job_state=JobState.FAIL,
                exit=None,
                error=message,
                stdout="",
                stderr="",
                outputs={},
                at=self.env.now(),
            )
            return [*ev, *ev2]

        def done() -> None:
            self.busy.discard(jid)
            # a failed job like any other: its sequence is retried if it has tries left (the
            # retry runs again the jobs that set what the node expands over)
            self._to_failed(jid)

        self._write(f"expand-fail {jid}", write, done)

    # ---- failures of the journal itself

    def _on_launch_failed(self, msg: LaunchFailed) -> None:
        """The RUNNING row could not be committed: the job did not run; try again later."""
        jid = msg.job_id
        self.running.pop(jid, None)
        self.env.slots.release(by=self)
        self.tries[jid] = self.tries.get(jid, 1) - 1
        self.state[jid] = JobState.PENDING
        self.ready.add(jid)
        logger.error("journal write failed, job not started: {}", msg.error, action="journal_fail")
        self._stall()

    def _on_write_failed(self, msg: WriteFailed) -> None:
        logger.error("journal write failed ({}): {}", msg.what, msg.error, action="journal_fail")
        self.env.journal_failed(msg.error)
        self._stall()

    def _stall(self) -> None:
        """Stop starting jobs until the journal works again (checked every second)."""
        if self.journal_stalled:
            return
        self.journal_stalled = True
        since = time.monotonic()

        def probe() -> None:
            self.timers.pop("journal", None)
            # the writer turns healthy only after a commit: when nothing else writes, our next
            # launch is the test (its RUNNING row commits, or it fails and stalls us again)
            waited = time.monotonic() - since
            if self.env.journal_healthy() or self.mode != "run" or waited >= STALL_RETRY:
                self.journal_stalled = False
            else:
                loop = asyncio.get_running_loop()
                self.timers["journal"] = loop.call_later(1.0, self.post, Timer(probe))

        loop = asyncio.get_running_loop()
        self.timers["journal"] = loop.call_later(1.0, self.post, Timer(probe))

    # ---- stop, suspend, shutdown, timeout

    def _on_control(self, msg: Control) -> None:
        if msg.kind == "timeout":
            self.timed_out = True
            kind, reason = "stop", "request timed out"
        else:
            kind, reason = msg.kind, msg.reason
        if self.mode != "run" and not (self.mode == "shutdown" and kind == "shutdown"):
            if kind == "stop" and self.mode in ("suspend", "shutdown"):
                self.mode = "stop"
            return
        self.mode = "stop" if self.timed_out else kind
        self.stop_reason = reason
        for key, h in list(self.timers.items()):
            h.cancel()
            del self.timers[key]
        self.ready.clear()
        self.parked.clear()
        stop_reason = "stop" if self.mode == "stop" else self.mode
        if self.timed_out:
            stop_reason = "stop"
        if self.mode == "shutdown" and msg.grace > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(msg.grace, self.post, Timer(lambda: self._stop_running("shutdown")))
            return
        self._stop_running(stop_reason)

    def _stop_running(self, reason: str) -> None:
        for jid, runner in list(self.running.items()):
            if runner is not None:
                self._spawn(runner.stop(reason), f"stop:{self.rid}:{jid}")
