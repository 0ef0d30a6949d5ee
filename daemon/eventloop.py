"""Which event loop runs the daemon: asyncio's own, or uvloop (the optional `fast` extra).

uvloop is a drop-in asyncio event loop built on libuv: its callbacks, tasks' wake-ups, timers
and socket writes cost less than asyncio's pure-Python selector loop, which is where most of
spind's time per HTTP call and per job try goes (see docs/performance.md). spind uses nothing
that uvloop lacks (signal handlers, subprocesses, Unix and TCP servers, threads calling back
into the loop), and the test suite runs the daemon on both.

`event_loop` (config): `auto` takes uvloop when it is installed, else asyncio; `asyncio` and
`uvloop` force one (`uvloop` refuses to start without it installed).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Literal

from daemon.errors import SpindError

Choice = Literal["auto", "asyncio", "uvloop"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class LoopUnavailable(SpindError):
    """The configured event loop cannot be had."""


def _uvloop_factory() -> LoopFactory | None:
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = module.new_event_loop
    return factory


def loop_factory(choice: Choice) -> tuple[LoopFactory | None, str]:
    """(factory for `asyncio.Runner`, None for asyncio's default; the loop's name)."""
    if choice == "asyncio":
        return None, "asyncio"
    factory = _uvloop_factory()
    if factory is not None:
        return factory, "uvloop"
    if choice == "uvloop":
        raise LoopUnavailable(
            "event_loop: uvloop is not installed; install it (pip install 'spind[fast]') "
            "or set event_loop to auto or asyncio"
        )
    return None, "asyncio"


def running_loop_name() -> str:
    """`uvloop` or `asyncio`: what runs the current event loop (for logs and figures)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
