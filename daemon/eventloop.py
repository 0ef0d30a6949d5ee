"""Which event loop runs the daemon: asyncio's own (the default), or uvloop (the optional
`fast` extra).

uvloop is a drop-in asyncio event loop built on libuv: its callbacks, task wake-ups, timers and
socket writes cost less than asyncio's pure-Python selector loop, which helps a daemon that
serves many HTTP calls or runs many in-process jobs (`noop`, `sleep`, `http`, Python job
types). It is not the default because it starts processes with fork() where CPython uses
vfork(): on our 2-core machine a `shell` job's process took ~2.7 ms to start instead of
~0.8 ms, and 500 `shell` jobs 32 at a time ran 4-5x slower (docs/performance.md). spind uses
nothing that uvloop lacks (signal handlers, subprocesses, Unix and TCP servers, threads calling
back into the loop); tests/e2e/test_event_loops.py runs the daemon on both.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Literal

from daemon.errors import SpindError

Choice = Literal["asyncio", "uvloop"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class LoopUnavailable(SpindError):
    """The configured event loop cannot be had."""


def loop_factory(choice: Choice) -> LoopFactory | None:
    """The factory for `asyncio.Runner` (None: asyncio's own loop)."""
    if choice == "asyncio":
        return None
    try:
        module = importlib.import_module("uvloop")
    except ImportError as exc:
        raise LoopUnavailable(
            f"event_loop: uvloop cannot be imported ({exc}); install it "
            "(pip install 'spind[fast]') or set event_loop to asyncio"
        ) from exc
    factory: LoopFactory = module.new_event_loop
    return factory
