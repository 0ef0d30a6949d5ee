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

Here: the loop, scheduling, journal faults, stop/suspend/shutdown. The rest is composed in,
one module each: the messages (`daemon.inbox`), the `each` groups' windows (`daemon.windows`),
the edges (`daemon.edges`), journal writes (`daemon.chain_writer`); and, run in this loop on
this state, launching tries (`daemon.launch`), what a try's end does (`daemon.try_end`),
deferred expansion (`daemon.expansion`) and sequence retries (`daemon.resets`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from loguru import logger

from daemon import logctx
from daemon.chain import Chain, ChainJob, JobKind, ScopeVars
from daemon.chain_writer import ChainWriter
from daemon.eager import start as eager_start
from daemon.edges import Edges
from daemon.expansion import Expansions
from daemon.inbox import (
    DONE,
    ChainState,
    Control,
    LaunchFailed,
    Message,
    Timer,
    TryEnded,
    Wake,
    WriteFailed,
    Written,
)
from daemon.launch import TIME_SLICE, Launcher
from daemon.mailbox import Mailbox
from daemon.model import JobState, RequestState, RunningJob, ts_to_dt
from daemon.ready import ReadyQueue
from daemon.resets import Resets
from daemon.runner import TryRunner
from daemon.runtime_env import RuntimeEnv
from daemon.try_end import TryEnds
from daemon.windows import EachWindows

__all__ = ["STALL_RETRY", "ChainState", "Control", "Traverser"]

#: seconds a chain stalled by a journal fault waits before it tries a launch again by itself
STALL_RETRY = 5.0


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
        self.inbox: Mailbox[Message] = Mailbox()
        self.edges = Edges(chain)
        self.pending_preds: dict[str, int] = {}
        self.ready = ReadyQueue()  # predecessors done, in the order they became ready
        self.windows = EachWindows(chain, self.ready)  # parks what waits for its `each` group
        self.running: dict[str, TryRunner | None] = {}
        self.busy: set[str] = set()  # a write or expansion in flight for this job
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.mode = "run"
        self.stop_reason = ""
        self.failed = False
        self.held = ""
        self.timed_out = False
        self.journal_stalled = False
        self.waiting_slot = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.writer = ChainWriter(env, request_id, self.post, self.spawn)
        self.launcher = Launcher(self)
        self.expansions = Expansions(self)
        self.resets = Resets(self)
        self.ends = TryEnds(self)
        self._init_counts()

    # ---- setup

    def is_done(self, jid: str) -> bool:
        return self.state.get(jid) in DONE

    def _init_counts(self) -> None:
        state = self.state
        for jid in self.chain.jobs:
            state.setdefault(jid, JobState.PENDING)
        pending = dict.fromkeys(self.chain.jobs, 0)
        for a, b in self.chain.edges:  # one pass over the edges: a resume starts 1000s
            if state.get(a) not in DONE:
                pending[b] += 1
        self.pending_preds = pending
        self.windows.add(list(self.chain.jobs), self.state, self.tries)
        for jid, count in self.pending_preds.items():
            if count == 0 and self.state[jid] == JobState.PENDING:
                self.ready.add(jid)

    def recount_preds(self, jid: str) -> None:
        """Count again the predecessors of `jid` not done (after an expansion or a reset)."""
        self.pending_preds[jid] = sum(1 for p in self.edges.preds[jid] if not self.is_done(p))

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
        with logctx.context(request_id=self.rid):
            deadline = None
            if self.chain.timeout:
                deadline = asyncio.get_running_loop().call_later(
                    self.chain.timeout, self.post, Control("timeout", reason="request timed out")
                )
            try:
                self._schedule()
                inbox = self.inbox
                loop = asyncio.get_running_loop()
                while not self._finished():
                    self._handle(await inbox.get())
                    # everything that arrived meanwhile, so that the try ends it brings share
                    # one journal write and the jobs they release one scheduling step; for one
                    # time slice at most, then the rest of the loop gets its turn
                    until = loop.time() + TIME_SLICE
                    while not inbox.empty() and loop.time() <= until:
                        self._handle(inbox.get_nowait())
                    self.writer.flush_ends()
                    self._schedule()
                    if not inbox.empty():
                        await asyncio.sleep(0)
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
        if all(self.is_done(j) for j in self.chain.jobs):
            return RequestState.COMPLETE, ""
        failed = [j for j, s in self.state.items() if s in (JobState.FAIL, JobState.STOPPED)]
        names = ", ".join(f"{self.chain.jobs[j].name} ({j})" for j in failed[:5])
        return RequestState.FAIL, f"failed: {names}" if names else "nothing more can run"

    def _finished(self) -> bool:
        if self.running or self.busy or self.writer.inflight:
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
            self.ends.on_try_end(msg)
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

    def spawn(self, coro: Coroutine[Any, Any, None], name: str, *, eager: bool = False) -> None:
        """Run `coro` in a task of this chain. `eager`: take its first step now, and make a
        task only if it has to wait (daemon.eager)."""
        if eager:
            started = eager_start(coro, name)
            if started is None:
                return  # it finished in its first step
            task = started
        else:
            task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- scheduling

    def _startable(self, jid: str) -> bool:
        if self.resets.blocked(self.chain.jobs[jid].scope):
            return False
        return self.windows.full(jid) is None

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
                self.launcher.start(launches)

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
            if self.resets.blocked(job.scope):
                continue  # its scope is being reset; the reset makes it ready again
            full = self.windows.full(jid)
            if full is not None:
                self.windows.park(jid, full)
                continue
            if job.kind == JobKind.DEFERRED:
                self.expansions.start(jid)
                continue
            if not self.env.slots.try_acquire(self):
                self.ready.push_front(jid)
                self.waiting_slot = True
                return
            launches.append((job, self._claim(jid), self.values.job_args(job)))

    def _claim(self, jid: str) -> int:
        """Count a try of a job about to start (its slot is taken); its try number."""
        try_no = self.tries.get(jid, 0) + 1
        self.tries[jid] = try_no
        self.state[jid] = JobState.RUNNING
        self.running[jid] = None
        self.windows.started(jid)
        return try_no

    def unclaim(self, jid: str) -> None:
        """A claimed try whose RUNNING row was not written: the job did not start."""
        self.running.pop(jid, None)
        self.env.slots.release(by=self)
        self.tries[jid] = self.tries.get(jid, 1) - 1
        self.state[jid] = JobState.PENDING

    def claim_successors(self, jid: str) -> list[tuple[str, int]]:
        """Successors that `jid` completing makes ready and that may start at once, claimed
        now: their RUNNING rows are written in the same transaction as its COMPLETE row, so
        a line of jobs costs one commit per job, and each still starts only after both
        rows are committed. (job id, try) of each."""
        if self.mode != "run" or self.journal_stalled or (self.failed and self.chain.fail_fast):
            return []
        out: list[tuple[str, int]] = []
        slots = self.env.slots
        for s in self.edges.succs.get(jid, ()):
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
                or self.resets.blocked(job.scope)
                or self.windows.full(s) is not None
            ):
                continue
            if slots.used >= slots.limit or not slots.try_acquire(self):
                break  # the usual path starts it when a slot is free
            out.append((s, self._claim(s)))
        return out

    # ---- a job done, a job ready (once its end, expansion or reset is journaled)

    def mark_done(self, jid: str) -> None:
        self.windows.done(jid)
        for s in self.edges.succs.get(jid, ()):
            self.pending_preds[s] -= 1
            if self.pending_preds[s] == 0 and self.state[s] == JobState.PENDING:
                self.make_ready(s)

    def make_ready(self, jid: str) -> None:
        if jid not in self.timers and self.state[jid] == JobState.PENDING:
            self.ready.add(jid)

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
        self.windows.clear_parked()
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
                self.spawn(runner.stop(reason), f"stop:{self.rid}:{jid}")
