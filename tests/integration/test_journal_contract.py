"""Contract tests of every Journal method, on real SQLite files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import BadRequest
from daemon.journal import (
    AlreadyExists,
    IllegalTransition,
    Journal,
    JournalError,
    JournalUnavailable,
    RequestFilter,
)
from daemon.model import JobState, RequestState
from tests.integration.journal_helpers import (
    T0,
    make_chain,
    make_patch,
    make_record,
    open_journal,
    run_job,
)

P, R, S = RequestState.PENDING, RequestState.RUNNING, RequestState.SUSPENDED
C, F, X = RequestState.COMPLETE, RequestState.FAIL, RequestState.STOPPED


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(tmp_path / "journal.db")
    yield j
    await j.close()


async def test_create_and_load_round_trip(journal: Journal) -> None:
    chain = make_chain(3)
    rec = make_record("R1", args={"env": "prod", "n": 3})
    events = await journal.create_request(rec, chain)
    assert [(e.kind, e.state, e.request_id) for e in events] == [("request", "PENDING", "R1")]
    assert events[0].seq >= 1

    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert loaded.record == rec
    assert loaded.chain == chain
    assert set(loaded.jobs) == {"j1", "j2", "j3"}
    assert all(j.state == JobState.PENDING and j.tries == 0 for j in loaded.jobs.values())
    assert loaded.scope_tries == {}
    assert loaded.completed_order == []
    assert loaded.running_tries == []
    assert await journal.load_request("nope") is None
    assert await journal.get_view("nope") is None
    assert await journal.get_request("nope") is None


async def test_duplicate_id_and_idempotency_key(journal: Journal) -> None:
    await journal.create_request(
        make_record("R1"), make_chain(), idempotency_key="k1", body_hash="h1"
    )
    assert await journal.find_idempotent("k1") == ("R1", "h1")
    assert await journal.find_idempotent("k2") is None
    with pytest.raises(AlreadyExists, match="R1 already exists"):
        await journal.create_request(make_record("R1"), make_chain())
    with pytest.raises(AlreadyExists, match="used by request R1"):
        await journal.create_request(make_record("R2"), make_chain(), idempotency_key="k1")
    assert await journal.get_view("R2") is None
    assert await journal.events_after("R2", 0) == []


@pytest.mark.parametrize(
    ("path", "started", "finished"),
    [
        ([(R, [P])], True, False),
        ([(R, [P]), (C, [R])], True, True),
        ([(R, [P]), (S, [R]), (R, [S])], True, False),
        ([(R, [P]), (F, [R]), (R, [F])], True, False),  # request retry: not finished any more
        ([(X, [P, R, S])], False, True),
    ],
)
async def test_set_request_state_times(
    journal: Journal,
    path: list[tuple[RequestState, list[RequestState]]],
    started: bool,
    finished: bool,
) -> None:
    await journal.create_request(make_record("R1"), make_chain())
    for i, (state, expect) in enumerate(path, start=1):
        events = await journal.set_request_state(
            "R1", state, expect=expect, at=T0 + i, reason=f"step {i}"
        )
        assert [(e.kind, e.state, e.detail) for e in events] == [
            ("request", state.value, f"step {i}")
        ]
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert loaded.record.state == path[-1][0]
    assert loaded.record.reason == f"step {len(path)}"
    assert (loaded.record.started_at == T0 + 1) is started  # the first RUNNING, never moved
    assert (loaded.record.finished_at == T0 + len(path)) is finished
    assert (loaded.record.finished_at is None) is not finished


async def test_set_request_state_refuses_wrong_state(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain())
    with pytest.raises(IllegalTransition, match="R1 is PENDING, not RUNNING"):
        await journal.set_request_state("R1", C, expect=[R], at=T0)
    with pytest.raises(IllegalTransition, match="no request R9"):
        await journal.set_request_state("R9", R, expect=[P], at=T0)
    view = await journal.get_view("R1")
    assert view is not None and view.state == P
    assert len(await journal.events_after("R1", 0)) == 1  # the refused change left no event


async def test_job_tries_retry_then_complete(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(2))
    ev = await journal.job_started("R1", "j1", 1, 1, T0)
    assert [(e.kind, e.state, e.job_id, e.try_) for e in ev] == [("job", "RUNNING", "j1", 1)]
    ev = await journal.job_finished(
        "R1", "j1", 1, log_state=JobState.FAIL, job_state=JobState.PENDING, exit=2,
        error="boom", stdout="o1", stderr="e1", outputs={"ignored": True}, at=T0 + 1,
    )  # fmt: skip
    assert [(e.state, e.try_, e.detail) for e in ev] == [("PENDING", 1, "try FAIL: boom")]
    await journal.job_started("R1", "j1", 2, 1, T0 + 2)
    await journal.job_finished(
        "R1", "j1", 2, log_state=JobState.COMPLETE, job_state=JobState.COMPLETE, exit=0,
        error="", stdout="o2", stderr="", outputs={"host": "db1"}, at=T0 + 3,
    )  # fmt: skip

    loaded = await journal.load_request("R1")
    assert loaded is not None
    j1 = loaded.jobs["j1"]
    assert (j1.state, j1.tries, j1.outputs, j1.finish_order) == (
        JobState.COMPLETE,
        2,
        {"host": "db1"},
        1,
    )
    assert loaded.completed_order == ["j1"]
    log = await journal.job_log("R1", "j1")
    assert [(r.try_, r.state, r.exit, r.error, r.stdout, r.stderr) for r in log] == [
        (1, JobState.FAIL, 2, "boom", "o1", "e1"),
        (2, JobState.COMPLETE, 0, "", "o2", ""),
    ]
    assert all(r.boot_id == journal.boot_id and r.name == "node1" for r in log)
    assert log[0].started_at is not None and log[0].started_at.timestamp() == T0
    assert log[1].finished_at is not None and log[1].finished_at.timestamp() == T0 + 3


async def test_finish_order_follows_completion(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(3))
    for jid in ("j3", "j1", "j2"):
        await run_job(journal, "R1", jid)
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert loaded.completed_order == ["j3", "j1", "j2"]


@pytest.mark.parametrize(
    ("setup", "call", "message"),
    [
        ([], "finish j1 1", "j1 of request R1 is PENDING, not RUNNING"),
        (["start j1 1"], "start j1 2", "j1 of request R1 is RUNNING, not PENDING"),
        ([], "start j7 1", "has no job j7"),
        (["start j1 1"], "finish j1 2", "has no try 2"),
        (["start j1 1", "fail j1 1"], "start j1 1", "try 1 of job j1 of request R1 was already"),
        (["start j1 1"], "interrupt j1 3", "has no try 3"),
        (["start j1 1", "fail j1 1"], "interrupt j1 1", "try 1 of job j1 of request R1 is FAIL"),
    ],
)
async def test_job_cas_refusals(
    journal: Journal, setup: list[str], call: str, message: str
) -> None:
    await journal.create_request(make_record("R1"), make_chain(2))

    async def do(step: str) -> None:
        verb, jid, n = step.split()
        try_no = int(n)
        if verb == "start":
            await journal.job_started("R1", jid, try_no, 1, T0)
        elif verb == "interrupt":
            await journal.interrupt_try(
                "R1", jid, try_no, job_state=JobState.PENDING, error="", at=T0
            )
        else:
            state = JobState.FAIL if verb == "fail" else JobState.COMPLETE
            job_state = JobState.PENDING if verb == "fail" else JobState.COMPLETE
            await journal.job_finished(
                "R1", jid, try_no, log_state=state, job_state=job_state, exit=None,
                error="", stdout="", stderr="", outputs={}, at=T0,
            )  # fmt: skip

    for step in setup:
        await do(step)
    before = await journal.load_request("R1")
    with pytest.raises(IllegalTransition, match=message):
        await do(call)
    assert await journal.load_request("R1") == before


@pytest.mark.parametrize(
    ("log_state", "job_state"),
    [(JobState.RUNNING, JobState.COMPLETE), (JobState.COMPLETE, JobState.RUNNING)],
)
async def test_job_finished_rejects_bad_states(
    journal: Journal, log_state: JobState, job_state: JobState
) -> None:
    with pytest.raises(ValueError, match="cannot"):
        await journal.job_finished(
            "R1", "j1", 1, log_state=log_state, job_state=job_state, exit=None, error="",
            stdout="", stderr="", outputs={}, at=T0,
        )  # fmt: skip


async def test_job_started_needs_a_boot(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.db")
    try:
        await j.create_request(make_record("R1"), make_chain())
        with pytest.raises(JournalError, match="start_boot"):
            await j.job_started("R1", "j1", 1, 1, T0)
    finally:
        await j.close()


async def test_interrupted_try_of_older_boot(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = await open_journal(path)
    old_boot = j.boot_id
    await j.create_request(make_record("R1"), make_chain(2))
    await j.job_started("R1", "j1", 1, 1, T0)
    assert await j.stale_running_tries() == []  # this boot's own try is not stale
    await j.close()

    j = await open_journal(path)
    try:
        assert j.boot_id != old_boot
        assert await j.stale_running_tries() == [("R1", "j1", 1, old_boot)]
        loaded = await j.load_request("R1")
        assert loaded is not None
        assert loaded.running_tries == [("j1", 1, old_boot)]
        ev = await j.interrupt_try("R1", "j1", 1, job_state=JobState.PENDING, error="boot", at=T0)
        assert [(e.state, e.try_, e.detail) for e in ev] == [
            ("PENDING", 1, "try INTERRUPTED: boot")
        ]
        loaded = await j.load_request("R1")
        assert loaded is not None
        assert loaded.running_tries == []
        assert loaded.jobs["j1"].state == JobState.PENDING
        assert loaded.jobs["j1"].tries == 1  # the try counted: the next one is try 2
        await j.job_started("R1", "j1", 2, 1, T0 + 1)
        assert await j.stale_running_tries() == []  # interrupted now, and try 2 is ours
        log = await j.job_log("R1")
        assert [(r.try_, r.state, r.boot_id) for r in log] == [
            (1, JobState.INTERRUPTED, old_boot),
            (2, JobState.RUNNING, j.boot_id),
        ]
    finally:
        await j.close()


async def test_resume_request_is_one_transaction(journal: Journal) -> None:
    """The resume of a request at start: its interrupted tries and its new state commit
    together, or (a refusal) nothing does."""
    await journal.create_request(make_record("R1"), make_chain(3))
    await journal.set_request_state("R1", R, expect=[P], at=T0)
    await journal.job_started("R1", "j1", 1, 1, T0)
    await journal.job_started("R1", "j2", 1, 1, T0)
    interrupts = [("j1", 1, JobState.PENDING, "boot"), ("j2", 1, JobState.FAIL, "hold")]
    before = await journal.load_request("R1")
    with pytest.raises(IllegalTransition, match="j3 of request R1 has no try 1"):
        await journal.resume_request(  # j3 never ran: the whole write is refused
            "R1", [*interrupts, ("j3", 1, JobState.PENDING, "")], R, expect=[R], reason="", at=T0
        )
    assert await journal.load_request("R1") == before
    events = await journal.resume_request("R1", interrupts, S, expect=[R], reason="held", at=T0)
    assert [(e.kind, e.job_id, e.state) for e in events] == [
        ("job", "j1", "PENDING"),
        ("job", "j2", "FAIL"),
        ("request", None, "SUSPENDED"),
    ]
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert loaded.running_tries == []
    assert (loaded.record.state, loaded.record.reason) == (S, "held")
    assert (loaded.jobs["j1"].state, loaded.jobs["j2"].state) == (JobState.PENDING, JobState.FAIL)


async def test_load_request_counts_failed_tries_per_run_epoch(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(2))
    await run_job(journal, "R1", "j1", try_no=1, state=JobState.FAIL)
    await journal.reset_jobs("R1", ["j1"], scope_id=None, scope_try=None, at=T0)
    await run_job(journal, "R1", "j1", try_no=2, state=JobState.FAIL)
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert loaded.failed == {("j1", 1): 2}


async def test_apply_patch(journal: Journal) -> None:
    chain = make_chain(3, deferred=("j2",))
    await journal.create_request(make_record("R1"), chain)
    await run_job(journal, "R1", "j1")
    patch = make_patch("j2", ["j4", "j5"], after="j3")
    ev = await journal.apply_patch("R1", patch, at=T0 + 5)
    assert [(e.kind, e.state, e.job_id, e.detail) for e in ev] == [
        ("expand", "COMPLETE", "j2", "j2: added 2 jobs")
    ]
    chain.apply(patch)
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert loaded.chain == chain
    assert loaded.jobs["j2"].state == JobState.COMPLETE
    assert loaded.jobs["j4"].state == loaded.jobs["j5"].state == JobState.PENDING
    assert loaded.completed_order == ["j1", "j2"]

    detail = await journal.get_request("R1")
    assert detail is not None
    assert [(v.id, v.kind, v.state) for v in detail.jobs] == [
        ("j1", "job", JobState.COMPLETE),
        ("j2", "deferred", JobState.COMPLETE),
        ("j3", "job", JobState.PENDING),
        ("j4", "job", JobState.PENDING),
        ("j5", "job", JobState.PENDING),
    ]
    assert detail.edges == chain.edges
    assert (detail.total_jobs, detail.finished_jobs) == (4, 1)  # the deferred node not counted


@pytest.mark.parametrize(
    ("patch_args", "message"),
    [
        (("j2", ["j4"]), "j2 of request R1 is COMPLETE"),  # expanded twice
        (("j1", ["j4"]), "j1 of request R1 is PENDING"),  # j1 is not deferred
        (("j3", ["j1"]), "adds a job id that exists"),
    ],
)
async def test_apply_patch_refusals(
    journal: Journal, patch_args: tuple[str, list[str]], message: str
) -> None:
    await journal.create_request(make_record("R1"), make_chain(3, deferred=("j2", "j3")))
    await journal.apply_patch("R1", make_patch("j2", ["j4"]), at=T0)
    before = await journal.load_request("R1")
    with pytest.raises(IllegalTransition, match=message):
        await journal.apply_patch("R1", make_patch(*patch_args), at=T0)
    assert await journal.load_request("R1") == before


async def test_reset_jobs_for_sequence_retry(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(3))
    await run_job(journal, "R1", "j1", outputs={"a": 1})
    await run_job(journal, "R1", "j2", state=JobState.FAIL)
    ev = await journal.reset_jobs("R1", ["j1", "j2", "j2"], scope_id="s1", scope_try=2, at=T0)
    assert [(e.kind, e.state, e.detail) for e in ev] == [
        ("reset", "PENDING", "2 jobs of scope s1, try 2")
    ]
    loaded = await journal.load_request("R1")
    assert loaded is not None
    assert loaded.scope_tries == {"s1": 2}
    assert loaded.completed_order == []
    j1 = loaded.jobs["j1"]
    assert (j1.state, j1.tries, j1.seq_try, j1.outputs, j1.finish_order) == (
        JobState.PENDING,
        1,
        2,
        {},
        None,
    )
    # try numbers keep counting after a reset
    await journal.job_started("R1", "j1", 2, 2, T0 + 1)
    log = await journal.job_log("R1", "j1")
    assert [(r.try_, r.sequence_try) for r in log] == [(1, 1), (2, 2)]


async def test_each_reset_starts_a_new_epoch(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(2))
    await run_job(journal, "R1", "j1", state=JobState.FAIL)
    for epoch in (2, 3):
        await journal.reset_jobs("R1", ["j1"], scope_id=None, scope_try=None, at=T0)
        loaded = await journal.load_request("R1")
        assert loaded is not None
        assert (loaded.jobs["j1"].state, loaded.jobs["j1"].seq_try) == (JobState.PENDING, epoch)
        assert loaded.jobs["j2"].seq_try == 1  # not reset
        assert loaded.scope_tries == {}


async def test_reset_jobs_refusals(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(2))
    await journal.job_started("R1", "j1", 1, 1, T0)
    before = await journal.load_request("R1")
    with pytest.raises(IllegalTransition, match=r"j1 \(RUNNING\), j9 \(missing\)"):
        await journal.reset_jobs("R1", ["j1", "j2", "j9"], scope_id="s1", scope_try=2, at=T0)
    assert await journal.load_request("R1") == before
    with pytest.raises(ValueError, match="together"):
        await journal.reset_jobs("R1", ["j2"], scope_id="s1", scope_try=None, at=T0)


async def test_skip_job(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(2))
    await run_job(journal, "R1", "j1", state=JobState.FAIL)
    ev = await journal.skip_job("R1", "j1", user="bob", reason="flaky host", at=T0)
    assert [(e.kind, e.state, e.job_id, e.detail) for e in ev] == [
        ("skip", "SKIPPED", "j1", "by bob: flaky host")
    ]
    view = await journal.get_view("R1")
    assert view is not None and (view.total_jobs, view.finished_jobs) == (2, 1)
    with pytest.raises(IllegalTransition, match="j1 of request R1 is SKIPPED"):
        await journal.skip_job("R1", "j1", user="bob", reason="again", at=T0)
    await journal.job_started("R1", "j2", 1, 1, T0)
    with pytest.raises(IllegalTransition, match="is RUNNING, not FAIL/PENDING/STOPPED"):
        await journal.skip_job("R1", "j2", user="bob", reason="running", at=T0)


async def test_unfinished_request_ids_oldest_first(journal: Journal) -> None:
    for i, state in enumerate([C, S, P, R, F, X, P]):
        rec = make_record(f"R{i}", created_at=T0 + 10 - i, state=state)
        await journal.create_request(rec, make_chain(1))
    assert await journal.unfinished_request_ids() == ["R6", "R3", "R2", "R1"]


async def test_events_after_pages_in_order(journal: Journal) -> None:
    await journal.create_request(make_record("R1"), make_chain(3))
    await journal.create_request(make_record("R2"), make_chain(1))
    for jid in ("j1", "j2", "j3"):
        await run_job(journal, "R1", jid)
    events = await journal.events_after("R1", 0)
    assert len(events) == 7 and all(e.request_id == "R1" for e in events)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7
    first = await journal.events_after("R1", 0, limit=3)
    rest = await journal.events_after("R1", first[-1].seq, limit=100)
    assert first + rest == events
    assert await journal.events_after("R1", seqs[-1]) == []


FIND_ROWS: list[tuple[str, str, str, RequestState, dict[str, Any], float]] = [
    # id, type, user, state, args, created
    ("A", "deploy", "alice", C, {"env": "prod", "n": 1, "dry": True}, 10.0),
    ("B", "deploy", "bob", F, {"env": "dev", "n": 2, "dry": False}, 20.0),
    ("C", "restart", "alice", R, {"env": "prod", "host": "db 1"}, 30.0),
    ("D", "restart", "carol", P, {"env": "prod", "ratio": 1.5, "tags": ["a"]}, 40.0),
    ("E", "deploy", "alice", X, {}, 50.0),
]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (RequestFilter(), ["E", "D", "C", "B", "A"]),
        (RequestFilter(type="deploy"), ["E", "B", "A"]),
        (RequestFilter(user="alice"), ["E", "C", "A"]),
        (RequestFilter(type="restart", user="alice"), ["C"]),
        (RequestFilter(states=[C]), ["A"]),
        (RequestFilter(states=[C, F, P]), ["D", "B", "A"]),
        (RequestFilter(args={"env": "prod"}), ["D", "C", "A"]),
        (RequestFilter(args={"env": "prod", "n": "1"}), ["A"]),
        (RequestFilter(args={"dry": "false"}), ["B"]),
        (RequestFilter(args={"ratio": "1.5"}), ["D"]),
        (RequestFilter(args={"host": "db 1"}), ["C"]),
        (RequestFilter(args={"tags": '["a"]'}), ["D"]),
        (RequestFilter(args={"env": "nowhere"}), []),
        (RequestFilter(args={"missing": ""}), []),
        (RequestFilter(since=T0 + 20), ["E", "D", "C", "B"]),
        (RequestFilter(until=T0 + 30), ["B", "A"]),
        (RequestFilter(since=T0 + 20, until=T0 + 40), ["C", "B"]),
        (RequestFilter(limit=2), ["E", "D"]),
        (RequestFilter(limit=2, offset=2), ["C", "B"]),
        (RequestFilter(offset=10), []),
        (RequestFilter(type="deploy", states=[C, X], args={"env": "prod"}), ["A"]),
    ],
)
async def test_find_requests(journal: Journal, flt: RequestFilter, expected: list[str]) -> None:
    for rid, rtype, user, state, args, created in FIND_ROWS:
        rec = make_record(
            rid, type=rtype, user=user, args=args, state=state, created_at=T0 + created
        )
        await journal.create_request(rec, make_chain(2))
    found = await journal.find_requests(flt)
    assert [v.id for v in found] == expected
    for v in found:
        assert v.total_jobs == 2 and v.finished_jobs == 0


@pytest.mark.parametrize("flt", [RequestFilter(limit=0), RequestFilter(offset=-1)])
async def test_find_requests_rejects_bad_pages(journal: Journal, flt: RequestFilter) -> None:
    with pytest.raises(BadRequest, match=r"limit|offset"):
        await journal.find_requests(flt)


async def test_prune_finished(journal: Journal) -> None:
    # R0..R4 finish at T0+0..4; R5 stays running; R6 is pending.
    for i in range(7):
        await journal.create_request(make_record(f"R{i}"), make_chain(2))
        await journal.set_request_state(f"R{i}", R, expect=[P], at=T0)
        await run_job(journal, f"R{i}", "j1")
        if i < 5:
            await journal.set_request_state(f"R{i}", C, expect=[R], at=T0 + i)
    assert await journal.prune_finished(T0 + 3, batch=2) == 3  # R0, R1, R2, in 2 transactions
    remaining = [v.id for v in await journal.find_requests(RequestFilter())]
    assert sorted(remaining) == ["R3", "R4", "R5", "R6"]
    for gone in ("R0", "R1", "R2"):
        assert await journal.load_request(gone) is None
        assert await journal.job_log(gone) == []
        assert await journal.events_after(gone, 0) == []
    assert await journal.prune_finished(T0 + 100) == 2
    assert sorted(v.id for v in await journal.find_requests(RequestFilter())) == ["R5", "R6"]
    assert await journal.integrity_check() == "ok"


async def test_close_drains_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = await open_journal(path)
    tasks = [
        asyncio.create_task(j.create_request(make_record(f"R{i}"), make_chain(1)))
        for i in range(50)
    ]
    await asyncio.sleep(0)  # every task has queued its write
    await j.close()
    assert all(t.done() and not t.exception() for t in tasks)
    with pytest.raises(JournalUnavailable, match="closed"):
        await j.create_request(make_record("late"), make_chain(1))
    with pytest.raises(JournalUnavailable, match="closed"):
        await j.get_view("R1")
    await j.close()  # idempotent

    j = await open_journal(path)
    try:
        assert len(await j.find_requests(RequestFilter(limit=1000))) == 50
    finally:
        await j.close()


async def test_acknowledged_writes_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = await open_journal(path, synchronous="FULL")
    await j.create_request(make_record("R1"), make_chain(2))
    await run_job(j, "R1", "j1", outputs={"k": "v"})
    await j.close()
    j = await open_journal(path)
    try:
        loaded = await j.load_request("R1")
        assert loaded is not None and loaded.jobs["j1"].outputs == {"k": "v"}
    finally:
        await j.close()


async def test_backup_copy_opens(journal: Journal, tmp_path: Path) -> None:
    await journal.create_request(make_record("R1"), make_chain(2))
    dest = tmp_path / "backup.db"
    await journal.backup(dest)
    assert dest.stat().st_mode & 0o777 == 0o600
    copy = await Journal.open(dest)
    try:
        assert await copy.load_request("R1") == await journal.load_request("R1")
        assert await copy.integrity_check() == "ok"
    finally:
        await copy.close()
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []
    with pytest.raises(JournalError, match="cannot write a backup"):
        await journal.backup(tmp_path / "no" / "such" / "dir.db")
