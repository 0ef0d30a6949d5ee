"""daemon.mailbox.Mailbox: an unbounded queue for one consumer."""

from __future__ import annotations

import asyncio

import pytest

from daemon.mailbox import Mailbox


async def test_items_come_out_in_order_and_wake_the_consumer() -> None:
    box: Mailbox[int] = Mailbox()
    box.put_nowait(1)
    assert (box.qsize(), await box.get(), box.empty()) == (1, 1, True)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not getter.done()
    box.put_nowait(2)
    box.put_nowait(3)
    assert await asyncio.wait_for(getter, 5) == 2
    assert box.get_nowait() == 3
    with pytest.raises(asyncio.QueueEmpty):
        box.get_nowait()


async def test_one_consumer_at_a_time_and_a_cancelled_get_loses_nothing() -> None:
    box: Mailbox[str] = Mailbox()
    first = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one consumer"):
        await box.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    box.put_nowait("kept")
    assert await asyncio.wait_for(box.get(), 5) == "kept"
