"""daemon.runtime.Runtime.create over a real journal: created and RUNNING in one commit, and a
creation caught by a shutdown is left SUSPENDED (resumed at the next start), never RUNNING
with nobody running it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.builder import Limits
from daemon.errors import Unavailable
from daemon.events import EventBus
from daemon.jobs.registry import JobFactory
from daemon.journal import Journal
from daemon.model import Event, RequestState
from daemon.runtime import SHUTDOWN_REASON, Runtime
from daemon.runtime_env import RuntimeEnv, Settings, Slots
from daemon.specstore import SpecStore

SPEC = """
sequences:
  one:
    request: true
    nodes:
      a:
        category: job
        type: noop
  slow:
    request: true
    nodes:
      a:
        category: job
        type: sleep
        with: {duration: 30s}
  later:
    request: true
    nodes:
      list:
        category: job
        type: sleep
        with: {duration: 30s}
        sets: [{arg: hosts}]
      each-host:
        category: sequence
        type: one-host
        each: ["hosts:host"]
        deps: [list]
  one-host:
    args:
      required: [{name: host}]
    nodes:
      work:
        category: job
        type: noop
"""


class Rig:
    def __init__(self, journal: Journal, runtime: Runtime, published: list[Event]) -> None:
        self.journal = journal
        self.runtime = runtime
        self.published = published

    async def create(self, type: str) -> Any:
        view, _ = await self.runtime.create(
            type=type, args={}, user="u", trace_id="t", idempotency_key=None, body_hash=""
        )
        return view


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    journal = await Journal.open(tmp_path / "spind.db")
    await journal.start_boot(os.getpid(), "test")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text(SPEC)
    factory = JobFactory({})
    specs = SpecStore(tmp_path / "specs", factory)
    assert not [d for d in specs.load() if d.is_error]
    bus = EventBus()
    published: list[Event] = []

    def publish(events: Any) -> None:
        events = list(events)
        published.extend(events)
        bus.publish(events)

    env = RuntimeEnv(
        journal,
        factory,
        limits=Limits(),
        slots=Slots(16),
        settings=Settings(work_dir=str(tmp_path)),
        publish=publish,
    )
    runtime = Runtime(env, specs.sequences)
    try:
        yield Rig(journal, runtime, published)
    finally:
        await runtime.shutdown(0.0)
        await journal.close()


async def test_a_new_request_is_running_from_its_first_commit(rig: Rig) -> None:
    view = await rig.create("one")
    assert view.state == RequestState.RUNNING
    await rig.runtime.drivers[view.id]
    states = [(e.kind, e.state) for e in await rig.journal.events_after(view.id, 0)]
    assert states[:2] == [("request", "PENDING"), ("request", "RUNNING")]
    assert states[-1] == ("request", "COMPLETE")
    final = await rig.journal.get_view(view.id)
    assert final is not None and final.started_at is not None


@pytest.mark.parametrize("type_", ["slow", "later"])
async def test_the_answer_is_the_request_as_its_commit_left_it(rig: Rig, type_: str) -> None:
    """The 201's body is built without reading the request back: it must say what a read says
    (started, and the jobs counted as a read counts them: not the deferred `each` node)."""
    view = await rig.create(type_)
    read = await rig.journal.get_view(view.id)
    assert read is not None
    assert view == read
    assert view.started_at == view.created_at and view.total_jobs == 1


async def test_a_creation_caught_by_a_shutdown_is_left_suspended(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()
    create_request = rig.journal.create_request

    async def held(*args: Any, **kw: Any) -> list[Event]:
        entered.set()
        await gate.wait()  # the shutdown begins while the creation is under way
        return await create_request(*args, **kw)

    monkeypatch.setattr(rig.journal, "create_request", held)
    creating = asyncio.create_task(rig.create("slow"))
    await entered.wait()
    shutdown = asyncio.create_task(rig.runtime.shutdown(0.0))
    await asyncio.sleep(0.05)
    assert not shutdown.done()  # it waits for the creation
    with pytest.raises(Unavailable):
        await rig.create("one")  # a later one is refused
    gate.set()
    view = await creating
    await asyncio.wait_for(shutdown, 10)
    assert rig.runtime.drivers == {} and rig.runtime.traversers == {}
    final = await rig.journal.get_view(view.id)
    assert final is not None
    assert (final.state, final.reason) == (RequestState.SUSPENDED, SHUTDOWN_REASON)
    jobs = await rig.journal.load_request(view.id)
    assert jobs is not None and jobs.running_tries == []  # no job was started
