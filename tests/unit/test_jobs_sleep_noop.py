"""The `sleep` and `noop` job types."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.jobs import JobContext, JobFactory
from daemon.model import JobState

FACTORY = JobFactory()


def ctx(args: dict[str, Any] | None = None) -> JobContext:
    return JobContext(
        request_id="r1", job_id="j1", name="n", try_no=1, try_key="r1/j1/1", args=args or {}
    )


async def test_noop_completes() -> None:
    job = FACTORY.make("noop", name="n", with_={})
    result = await job.run(ctx())
    assert result.state is JobState.COMPLETE
    assert (result.error, result.outputs) == ("", {})


@pytest.mark.parametrize(
    ("with_", "args"),
    [
        ({"duration": "10ms"}, {}),
        ({"duration": "0"}, {}),
        ({"duration": "{{d}}"}, {"d": "20ms"}),
        ({"duration": "{{ d }}ms"}, {"d": 5}),
    ],
)
async def test_sleep_completes(with_: dict[str, Any], args: dict[str, Any]) -> None:
    job = FACTORY.make("sleep", name="n", with_=with_)
    assert (await job.run(ctx(args))).state is JobState.COMPLETE


@pytest.mark.parametrize(
    ("with_", "args", "error"),
    [
        ({"duration": "soon"}, {}, "duration: invalid duration 'soon'"),
        ({"duration": "{{d}}"}, {}, "duration: unknown arg 'd'"),
        ({"duration": "{{d}}"}, {"d": "-1s"}, "must not be negative"),
        ({"duration": ["1s"]}, {}, "duration: expected a duration"),
        ({}, {}, "duration: expected a duration"),
    ],
)
async def test_sleep_bad_duration_fails(
    with_: dict[str, Any], args: dict[str, Any], error: str
) -> None:
    result = await FACTORY.make("sleep", name="n", with_=with_).run(ctx(args))
    assert result.state is JobState.FAIL
    assert error in result.error


async def test_sleep_stop_ends_it_with_stopped() -> None:
    job = FACTORY.make("sleep", name="n", with_={"duration": "1h"})
    assert job.status() == "not started"
    task = asyncio.create_task(job.run(ctx()))
    while job.status() == "not started":
        await asyncio.sleep(0.001)
    assert job.status().startswith("sleeping 1h, ")
    assert job.status().endswith("s left")
    await job.stop()
    result = await asyncio.wait_for(task, 5)
    assert (result.state, result.error) == (JobState.STOPPED, "stopped")
    assert job.status() == "stopped"


async def test_sleep_stopped_before_it_runs() -> None:
    job = FACTORY.make("sleep", name="n", with_={"duration": "1h"})
    await job.stop()
    result = await asyncio.wait_for(job.run(ctx()), 5)
    assert result.state is JobState.STOPPED
