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

import msgspec
from aiohttp import web

from daemon.errors import SpindError
from daemon.model import Event, RequestState

HEARTBEAT = b": heartbeat\n\n"
_encoder = msgspec.json.Encoder()
_NAME = re.compile(r"[^A-Za-z0-9_.-]")


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
    """Send `events` as SSE until they end (then `end`), the client goes, or `stop` is set.

    One task (the pump) takes events as they come and formats them into a buffer; this
    coroutine writes whatever the buffer holds whenever it wakes. Events come in bursts (a
    commit's events are published together, and the pump takes all that are queued before it
    waits again), so a burst goes out in one write, and a stream costs two tasks, not a task
    and a wait per event."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    buf: list[bytes] = [b": stream of request %s\n\n" % request_id.encode()]
    last_state = ""
    wake: asyncio.Future[None] | None = None

    def kick(_: object = None) -> None:
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def pump() -> None:
        nonlocal last_state
        async for ev in events:
            if ev.kind == "request":
                last_state = ev.state
            buf.append(format_event(ev))
            kick()

    pumper = asyncio.create_task(pump(), name=f"sse-pump-{request_id}")
    stopping = asyncio.create_task(stop.wait(), name=f"sse-stop-{request_id}")
    pumper.add_done_callback(kick)
    stopping.add_done_callback(kick)
    try:
        while True:
            if buf:
                data = b"".join(buf)
                buf.clear()
                await resp.write(data)
                continue  # more may have come while it was written
            if pumper.done() or stopping.done():
                break
            wake = loop.create_future()
            timer = loop.call_later(heartbeat, kick)
            try:
                await wake
            finally:
                timer.cancel()
            if not buf and not pumper.done() and not stopping.done():
                await resp.write(HEARTBEAT)  # nothing for `heartbeat` seconds
        if pumper.done() and not stopping.done():
            pumper.result()  # a failure of the event source surfaces here
            state = last_state if _final(last_state) else await _safe(final_state)
            await resp.write(format_end(request_id, state))
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        for task in (pumper, stopping):
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
    return resp
