"""Start a coroutine at once, and give it a task only if it has to wait.

A job try runs in a task of its own so that it can wait (for a process, a timer, a socket)
while the loop does everything else. Many tries never wait: a `noop` job, a job refused before
it runs, a try stopped before it started. For them a task is pure cost: created, scheduled,
stepped once in a later loop iteration, and its done-callbacks run: ~8 us of the ~70 us a try
costs the loop. (Python 3.12 has `asyncio.eager_task_factory` for this, for every task of a
loop; spind runs on 3.11 too, and wants it for job tries only.)

`start(coro)` takes the coroutine's first step now, in a copy of the current context (as a
task would: context variables it sets stay its own). If it finishes, there is no task. If it
waits, the rest of it runs in a task made with that same context, which passes on what the
coroutine awaits and what the task throws in (cancellation), so it behaves as if it had been
a task from the start, one step earlier.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any

from loguru import logger


def start(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
    """Run `coro` until it first waits; None if it finished, else the task that runs the
    rest. An exception of its first step is logged (as asyncio logs a task's) and dropped."""
    ctx = contextvars.copy_context()
    try:
        pending = ctx.run(coro.send, None)
    except StopIteration:
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        logger.opt(exception=True).error("{} failed", name, action="task_failed")
        return None
    loop = asyncio.get_running_loop()
    return loop.create_task(_finish(coro, pending), name=name, context=ctx)


async def _finish(coro: Coroutine[Any, Any, None], pending: Any) -> None:
    await _Rest(coro, pending)


class _Rest:
    """Awaiting it drives a coroutine that already took its first step (and yielded
    `pending`, what it waits for) to its end."""

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, None]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: a cancellation
                try:
                    pending = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = coro.send(value)
                except StopIteration:
                    return
