"""Reads a petition's tally: the sum of its shards, and how far behind the
log the counts are.

Reads are served from a short-lived, coalescing cache: a flash crowd of
readers of one petition costs Redis about one read of that petition per
`tally_cache_seconds` per process, and the live stream shares the same reads.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from servicekit.coalescing import CoalescingCache
from servicekit.errors import invalid
from servicekit.petition_ids import PETITION_ID, PETITION_ID_RULE
from servicekit.petition_view import ViewPetition, petition_not_found
from services.tally.counters import ShardedCounters, Totals
from services.tally.thresholds import Crossing, ThresholdStore


class Petitions(Protocol):
    """Where the reader finds a petition: the process's petition view."""

    async def get_current(self, petition_id: str) -> ViewPetition | None: ...


EndOffsets = Callable[[Sequence[int]], Awaitable[dict[int, int]]]


@dataclass(frozen=True)
class TallySnapshot:
    petition_id: str
    totals: Totals
    as_of: float
    lag_messages: int
    thresholds_reached: list[Crossing]

    def same_counts(self, other: TallySnapshot) -> bool:
        """True when a watcher would see nothing new (time and lag aside)."""
        return self.totals == other.totals and self.thresholds_reached == other.thresholds_reached


class TallyReader:
    def __init__(
        self,
        counters: ShardedCounters,
        petitions: Petitions,
        thresholds: ThresholdStore,
        partitions: Callable[[], Sequence[int]],
        end_offsets: EndOffsets,
        lag_cache_seconds: float,
        cache_seconds: float,
    ):
        self._counters = counters
        self._petitions = petitions
        self._thresholds = thresholds
        self._partitions = partitions
        self._end_offsets = end_offsets
        self._lag_cache_seconds = lag_cache_seconds
        self._lag: tuple[float, int] = (0.0, 0)
        self.snapshots: CoalescingCache[str, TallySnapshot] = CoalescingCache(self._read_stores, cache_seconds)

    async def read(self, petition_id: str) -> TallySnapshot:
        """The petition's tally, at most cache_seconds old; INVALID_ARGUMENT
        or NOT_FOUND for an id that names no petition (in the petition view:
        no I/O for a petition it holds, so a flash crowd of readers costs no
        lookup; one created a moment ago is waited for)."""
        if not PETITION_ID.fullmatch(petition_id):
            raise invalid("petition_id", PETITION_ID_RULE)
        if await self._petitions.get_current(petition_id) is None:
            raise petition_not_found(petition_id)
        return await self.snapshots.get(petition_id)

    async def _read_stores(self, petition_id: str) -> TallySnapshot:
        # Taken before reading: the counts include everything applied by then.
        as_of = time.time()
        partitions = self._partitions()
        totals = await self._counters.totals(petition_id, partitions)
        reached = sorted((c for c, _ in await self._thresholds.reached(petition_id)), key=lambda c: c.reached_at)
        return TallySnapshot(petition_id, totals, as_of, await self._lag_messages(partitions), reached)

    async def _lag_messages(self, partitions: Sequence[int]) -> int:
        """Messages in the log not yet applied, over all partitions; cached
        briefly because it costs a broker round trip."""
        read_at, lag = self._lag
        if time.monotonic() - read_at < self._lag_cache_seconds:
            return lag
        ends = await self._end_offsets(partitions)
        applied = await self._counters.applied_offsets(partitions)
        lag = sum(max(0, ends[p] - (applied[p] + 1)) for p in partitions)
        self._lag = (time.monotonic(), lag)
        return lag
