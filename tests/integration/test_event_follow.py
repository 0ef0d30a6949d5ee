"""daemon.events.EventBus.follow over a real journal: backlog and finished-ness from one
snapshot, then live events, ending after the final state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from daemon import events as events_mod
from daemon.events import EventBus
from daemon.journal import Journal
from daemon.model import Event, RequestState
from tests.integration.journal_helpers import T0, make_chain, make_record, open_journal, run_job

P, R, C = RequestState.PENDING, RequestState.RUNNING, RequestState.COMPLETE
Backlog = Callable[[str, int], Awaitable[tuple[list[Event], bool] | None]]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(tmp_path / "spind.db")
    yield j
    await j.close()


def backlog_of(journal: Journal, page: int = events_mod.BACKLOG_PAGE) -> Backlog:
    return lambda rid, after: journal.backlog(rid, after, page)


async def state(journal: Journal, bus: EventBus, rid: str, to: RequestState) -> None:
    """A state change journaled, then published (as the runtime does)."""
    expect = [s for s in RequestState if s != to]
    bus.publish(await journal.set_request_state(rid, to, expect=expect, at=T0))


async def collect(it: AsyncIterator[Event]) -> list[tuple[str, str]]:
    return [(ev.kind, ev.state) async for ev in it]


async def test_a_finished_request_gives_its_backlog_and_ends(journal: Journal) -> None:
    bus = EventBus()
    await journal.create_request(make_record("R1"), make_chain(1))
    await state(journal, bus, "R1", R)
    await run_job(journal, "R1", "j1")
    await state(journal, bus, "R1", C)
    got = await asyncio.wait_for(collect(bus.follow("R1", 0, backlog_of(journal))), 5)
    assert got == [
        ("request", "PENDING"),
        ("request", "RUNNING"),
        ("job", "RUNNING"),
        ("job", "COMPLETE"),
        ("request", "COMPLETE"),
    ]
    assert bus._subs == {}  # nothing left subscribed


async def test_an_unknown_request_gives_nothing(journal: Journal) -> None:
    bus = EventBus()
    assert await asyncio.wait_for(collect(bus.follow("nope", 0, backlog_of(journal))), 5) == []
    assert bus._subs == {}


@pytest.mark.parametrize("page", [1, 2, events_mod.BACKLOG_PAGE])
async def test_live_events_follow_the_backlog_until_the_final_state(
    journal: Journal, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_mod, "BACKLOG_PAGE", page)
    bus = EventBus()
    await journal.create_request(make_record("R1"), make_chain(1))
    await state(journal, bus, "R1", R)
    follower = asyncio.create_task(collect(bus.follow("R1", 0, backlog_of(journal, page))))
    while not bus._subs:  # it has read the backlog and waits for live events
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not follower.done()
    await state(journal, bus, "R1", C)
    assert await asyncio.wait_for(follower, 5) == [
        ("request", "PENDING"),
        ("request", "RUNNING"),
        ("request", "COMPLETE"),
    ]


async def test_an_old_end_does_not_end_the_stream_of_a_request_running_again(
    journal: Journal,
) -> None:
    bus = EventBus()
    await journal.create_request(make_record("R1"), make_chain(1))
    await state(journal, bus, "R1", R)
    await state(journal, bus, "R1", RequestState.FAIL)
    await state(journal, bus, "R1", R)  # retried: running again
    follower = asyncio.create_task(collect(bus.follow("R1", 0, backlog_of(journal))))
    while not bus._subs:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not follower.done()  # the FAIL in the backlog is not the end
    await state(journal, bus, "R1", C)
    got = await asyncio.wait_for(follower, 5)
    assert [s for _, s in got] == ["PENDING", "RUNNING", "FAIL", "RUNNING", "COMPLETE"]


async def test_after_skips_what_the_client_has(journal: Journal) -> None:
    bus = EventBus()
    created = await journal.create_request(make_record("R1"), make_chain(1))
    await state(journal, bus, "R1", R)
    await state(journal, bus, "R1", C)
    got = await asyncio.wait_for(collect(bus.follow("R1", created[0].seq, backlog_of(journal))), 5)
    assert got == [("request", "RUNNING"), ("request", "COMPLETE")]
