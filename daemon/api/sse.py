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


class StreamsStop:
    """Ends every open stream at shutdown. Set once; a stream registers a callback for its
    life (not a task of its own waiting on an event)."""

    def __init__(self) -> None:
        self._set = False
        self._callbacks: dict[Callable[[], None], None] = {}

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        for callback in list(self._callbacks):
            callback()

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks[callback] = None

    def discard(self, callback: Callable[[], None]) -> None:
        self._callbacks.pop(callback, None)


class _Writer:
    """One stream's output: a buffer the pump fills, written out whenever the writer wakes,
    and one heartbeat timer for the whole stream, moved on by what was written since it was
    set (a timer made and cancelled at every wake cost more than the events' formatting)."""

    def __init__(self, resp: web.StreamResponse, heartbeat: float, first: bytes) -> None:
        self.resp = resp
        self.heartbeat = heartbeat
        self.loop = asyncio.get_running_loop()
        self.buf: list[bytes] = [first]
        self.wake: asyncio.Future[None] | None = None
        self.last_write = self.loop.time()
        self.beat: asyncio.TimerHandle | None = None

    def kick(self, _: object = None) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def add(self, data: bytes) -> None:
        self.buf.append(data)
        self.kick()

    async def write(self, data: bytes) -> None:
        await self.resp.write(data)
        self.last_write = self.loop.time()

    async def flush(self) -> bool:
        """Write what the buffer holds; False if it was empty."""
        if not self.buf:
            return False
        data = b"".join(self.buf)
        self.buf.clear()
        await self.write(data)
        return True

    async def sleep(self) -> bool:
        """Wait for a kick; True if it was the heartbeat's (nothing came for `heartbeat`)."""
        self.wake = self.loop.create_future()
        if self.beat is None:
            self.beat = self.loop.call_at(self.last_write + self.heartbeat, self._beat_due)
        await self.wake
        return not self.buf and self.beat is None

    def _beat_due(self) -> None:
        due = self.last_write + self.heartbeat
        if self.loop.time() >= due:
            self.beat = None
            self.kick()
        else:
            self.beat = self.loop.call_at(due, self._beat_due)

    def close(self) -> None:
        if self.beat is not None:
            self.beat.cancel()
            self.beat = None


async def stream(
    request: web.Request,
    request_id: str,
    events: AsyncIterator[Event],
    *,
    heartbeat: float,
    stop: StreamsStop,
    final_state: Callable[[], Awaitable[str]],
) -> web.StreamResponse:
    """Send `events` as SSE until they end (then `end`), the client goes, or `stop` is set.

    One task (the pump) takes events as they come and formats them into a buffer; this
    coroutine writes whatever the buffer holds whenever it wakes. Events come in bursts (a
    commit's events are published together, and the pump takes all that are queued before it
    waits again), so a burst goes out in one write, and a stream costs one task, not a task
    and a wait per event."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    out = _Writer(resp, heartbeat, b": stream of request %s\n\n" % request_id.encode())
    last_state = ""

    async def pump() -> None:
        nonlocal last_state
        async for ev in events:
            if ev.kind == "request":
                last_state = ev.state
            out.add(format_event(ev))

    pumper = asyncio.create_task(pump(), name=f"sse-pump-{request_id}")
    pumper.add_done_callback(out.kick)
    stop.add(out.kick)
    try:
        while True:
            if await out.flush():
                continue  # more may have come while it was written
            if pumper.done() or stop.is_set():
                break
            if await out.sleep() and not pumper.done() and not stop.is_set():
                await out.write(HEARTBEAT)  # nothing for `heartbeat` seconds
        if pumper.done() and not stop.is_set():
            pumper.result()  # a failure of the event source surfaces here
            state = last_state if _final(last_state) else await _safe(final_state)
            await resp.write(format_end(request_id, state))
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        stop.discard(out.kick)
        out.close()
        if not pumper.done():
            pumper.cancel()
            await asyncio.wait({pumper})
    return resp
