"""Server-sent events: a request's journal events, then an `end` event after a final state.

Wire format (one event)::

    id: <seq>
    event: request | job
    data: <Event as JSON>

A comment line (`: heartbeat`) goes out whenever nothing else did for `heartbeat` seconds, so
proxies and clients see the stream is alive. The stream closes early (without `end`) when the
daemon shuts down; a client reconnects with `Last-Event-ID` and misses nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from daemon.errors import SpindError
from daemon.model import Event, RequestState

HEARTBEAT = b": heartbeat\n\n"
_encoder = msgspec.json.Encoder()
_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_DONE = object()


class EndView(msgspec.Struct, kw_only=True, rename="camel"):
    """The data of the final `end` event."""

    request_id: str
    state: str


def format_event(ev: Event) -> bytes:
    name = _NAME.sub("_", ev.kind) or "event"
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (ev.seq, name.encode(), _encoder.encode(ev))


def format_end(request_id: str, state: str) -> bytes:
    return b"event: end\ndata: %s\n\n" % _encoder.encode(
        EndView(request_id=request_id, state=state)
    )


async def _next(it: AsyncIterator[Event]) -> Any:
    try:
        return await anext(it)
    except StopAsyncIteration:
        return _DONE


async def _safe(final_state: Callable[[], Awaitable[str]]) -> str:
    try:
        return await final_state()
    except SpindError:
        return ""


def _final(state: str) -> bool:
    return state in (s.value for s in RequestState if s.finished)


async def stream(
    request: web.Request,
    request_id: str,
    events: AsyncIterator[Event],
    *,
    heartbeat: float,
    stop: asyncio.Event,
    final_state: Callable[[], Awaitable[str]],
) -> web.StreamResponse:
    """Send `events` as SSE until they end (then `end`), the client goes, or `stop` is set."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    stopping = asyncio.create_task(stop.wait(), name=f"sse-stop-{request_id}")
    pending: asyncio.Task[Any] | None = None
    last_state = ""
    # Events often come in bursts (a job's end and its successor's start share a commit): what
    # is already there goes out in one write, not one write (and one send) per event.
    buf: list[bytes] = [b": stream of request %s\n\n" % request_id.encode()]
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(_next(events), name=f"sse-next-{request_id}")
            if not pending.done() and buf:
                await asyncio.sleep(0)  # one loop turn: a queued event completes it at once
                if not pending.done():
                    await resp.write(b"".join(buf))
                    buf.clear()
            if not pending.done():
                done, _ = await asyncio.wait(
                    {pending, stopping}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    break
                if pending not in done:
                    await resp.write(HEARTBEAT)
                    continue
            item = pending.result()
            pending = None
            if item is _DONE:
                state = last_state if _final(last_state) else await _safe(final_state)
                buf.append(format_end(request_id, state))
                break
            assert isinstance(item, Event)
            if item.kind == "request":
                last_state = item.state
            buf.append(format_event(item))
        if buf:
            await resp.write(b"".join(buf))
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        for task in (pending, stopping):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    return resp
