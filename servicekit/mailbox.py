"""A one-slot mailbox that keeps only the newest item.

A live counter fans one upstream value out to thousands of readers. If each
reader had a queue, a slow one would grow it without bound; with one slot, a
slow reader skips the values it had no time to take and always reads the
newest, so memory is bounded by the number of readers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestOnly(Generic[T]):
    """put() never blocks: it replaces whatever was not taken yet."""

    def __init__(self) -> None:
        self._slot: asyncio.Queue[T] = asyncio.Queue(maxsize=1)

    def put(self, item: T) -> None:
        with contextlib.suppress(asyncio.QueueEmpty):
            self._slot.get_nowait()
        self._slot.put_nowait(item)

    async def get(self) -> T:
        return await self._slot.get()
