"""A short-lived read-through cache of petitions.

During a viral peak every Sign reads the same petition; caching it for a
second or two turns millions of Cassandra reads into one per second per
process. A close takes at most max_age_seconds to be seen by every process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.catalogue.model import Petition
from services.catalogue.store import PetitionStore

# Unknown ids are cached too (so random ids cannot hammer Cassandra); the bound
# keeps a flood of distinct random ids from growing the cache without limit.
MAX_ENTRIES = 10_000


class CachedCatalogue:
    def __init__(self, store: PetitionStore, max_age_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._max_age = max_age_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, Petition | None]] = {}

    async def get(self, petition_id: str) -> Petition | None:
        now = self._clock()
        cached = self._entries.get(petition_id)
        if cached is not None and now - cached[0] < self._max_age:
            return cached[1]
        petition = await self._store.get(petition_id)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[petition_id] = (now, petition)
        return petition

    def forget(self, petition_id: str) -> None:
        """Drops a petition this process just changed, so it reads its own writes."""
        self._entries.pop(petition_id, None)
