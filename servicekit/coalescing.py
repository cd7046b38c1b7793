"""A read-through cache that coalesces concurrent misses.

When a petition goes viral, tens of thousands of people refresh its counter
at once (the UK petitions site fell over in March 2019 largely from those
reads). Serving a value read at most `max_age_seconds` ago, and letting every
concurrent miss for one key wait on the same single upstream read, bounds
the upstream cost to about one read per key per interval per process,
whatever the number of readers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CoalescingCache(Generic[K, V]):
    """Values by key, each loaded by `load`, reused while younger than
    max_age_seconds. A failed load is not cached: each of its waiters gets
    the error, and the next call tries again."""

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        max_age_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._load = load
        self._max_age = max_age_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        self.loads = 0

    async def get(self, key: K) -> V:
        cached = self._values.get(key)
        if cached is not None and self._clock() - cached[0] < self._max_age:
            return cached[1]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load_and_keep(key))
            # Marks a failure retrieved even if every waiter was cancelled.
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._loading[key] = pending
        # Shielded: one reader giving up (a cancelled RPC) must not cancel
        # the read the others are waiting for.
        return await asyncio.shield(pending)

    async def _load_and_keep(self, key: K) -> V:
        # Aged from when the read began: the value is at least that old.
        started = self._clock()
        self.loads += 1
        try:
            value = await self._load(key)
        finally:
            del self._loading[key]
        if len(self._values) >= self._max_entries and key not in self._values:
            # Oldest first: dicts keep insertion order and keys are re-inserted on refresh.
            del self._values[next(iter(self._values))]
        self._values.pop(key, None)
        self._values[key] = (started, value)
        return value
