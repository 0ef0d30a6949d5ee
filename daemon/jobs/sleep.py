"""The `sleep` job type: wait `with.duration` (a Go duration; `{{name}}` allowed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from daemon.duration import DurationError, format_duration, parse_duration
from daemon.jobs.base import Job, JobContext, JobResult, check_duration, scalar_text
from daemon.jobs.template import TemplateError, render
from daemon.model import JobState


class SleepJob(Job):
    type_name = "sleep"
    params = frozenset({"duration"})
    required_params = frozenset({"duration"})

    def __init__(self, *, name: str, type_name: str, with_: Mapping[str, Any]) -> None:
        super().__init__(name=name, type_name=type_name, with_=with_)
        self._stop = asyncio.Event()
        self._seconds: float | None = None
        self._deadline: float | None = None

    @classmethod
    def check_with(cls, with_: Mapping[str, Any]) -> list[str]:
        return check_duration(with_, "duration")

    def _duration(self, args: Mapping[str, Any]) -> float:
        text = scalar_text(self.with_.get("duration"))
        if text is None:
            raise ValueError("duration: expected a duration such as 2s")
        try:
            return parse_duration(render(text, args))
        except (DurationError, TemplateError) as exc:
            raise ValueError(f"duration: {exc}") from None

    async def run(self, ctx: JobContext) -> JobResult:
        try:
            seconds = self._duration(ctx.args)
        except ValueError as exc:
            return JobResult(state=JobState.FAIL, error=str(exc))
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return JobResult(state=JobState.COMPLETE)
        return JobResult(state=JobState.STOPPED, error="stopped")

    async def stop(self) -> None:
        self._stop.set()

    def status(self) -> str:
        if self._deadline is None or self._seconds is None:
            return "not started"
        if self._stop.is_set():
            return "stopped"
        left = max(0.0, self._deadline - time.monotonic())
        return f"sleeping {format_duration(self._seconds)}, {left:.1f}s left"
