"""An unbounded queue with one consumer: a traverser's inbox, the journal writer's queue.

`asyncio.Queue` serves any number of producers and consumers, with a bound: every put and get
looks up its loop, keeps lists of waiting getters and putters and wakes the next one. A chain's
traverser and the journal writer are each the only reader of their queue, which is never
bounded, and pass a message per job try: a deque and at most one waiting future do.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        """The oldest item, once there is one. One consumer at a time."""
        if self._waiter is not None:
            raise RuntimeError("a Mailbox has one consumer; another one is waiting")
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)
