"""daemon.eager.start: a coroutine's first step now, a task only if it waits."""

from __future__ import annotations

import asyncio
import contextvars
import io

import pytest
from loguru import logger

from daemon import eager

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("eager_test", default="outer")


async def test_a_coroutine_that_never_waits_runs_now_without_a_task() -> None:
    seen: list[str] = []

    async def quick() -> None:
        VAR.set("inner")  # its own copy of the context, as in a task
        seen.append(VAR.get())

    assert eager.start(quick(), "quick") is None
    assert seen == ["inner"]
    assert VAR.get() == "outer"


async def test_a_coroutine_that_waits_goes_on_in_a_task_with_its_context() -> None:
    seen: list[tuple[str, str]] = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        VAR.set("inner")
        seen.append(("before", VAR.get()))
        value = await gate  # a future's result comes through
        await asyncio.sleep(0)  # a bare yield too
        seen.append((value, VAR.get()))

    task = eager.start(waits(), "waits")
    assert task is not None and task.get_name() == "waits"
    assert seen == [("before", "inner")]  # the first step ran at once
    gate.set_result("after")
    await asyncio.wait_for(task, 5)
    assert seen == [("before", "inner"), ("after", "inner")]
    assert VAR.get() == "outer"


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cleaned: list[str] = []

    async def long() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    task = eager.start(long(), "long")
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cancelled"]


async def test_a_coroutine_that_catches_the_cancellation_ends_normally() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # it may still wait while it winds down

    task = eager.start(stubborn(), "stubborn")
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(task, 5)
    assert not task.cancelled()


async def test_errors_of_the_first_step_are_logged_later_ones_stay_in_the_task() -> None:
    out = io.StringIO()
    sink = logger.add(out, format="{level} {message}")
    try:

        async def broken() -> None:
            raise RuntimeError("at once")

        assert eager.start(broken(), "job:r:j1:1") is None
        assert "ERROR job:r:j1:1 failed" in out.getvalue()
        assert "RuntimeError: at once" in out.getvalue()

        async def later() -> None:
            await asyncio.sleep(0)
            raise RuntimeError("later")

        task = eager.start(later(), "later")
        assert task is not None
        with pytest.raises(RuntimeError, match="later"):
            await task
    finally:
        logger.remove(sink)
