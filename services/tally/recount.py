"""The recount: every count recomputed from Cassandra, the system of record,
compared with the live counters in Redis, and on request the Redis state
rebuilt from it, so that losing Redis loses nothing.

Rebuilding is safe while tally workers run: a shard is replaced only if its
applied offset did not move between reading the records and writing (else
it is read again), and a batch applied afterwards finds its signers already
known and changes nothing.

A petition's rows are in shards x SIGNATURE_BUCKETS Cassandra partitions
(servicekit/signature_rows.py). One read per shard names all its buckets
(`bucket IN ?`): a petition with few signatures, or none in a shard, costs
one request per shard as before the buckets, which matters when a lost
Redis shard is rebuilt for every petition the tally knows (recovery.py);
Cassandra pages through the buckets, so a hot petition's shard is read a
page at a time. At most `concurrency` such reads run at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from servicekit.signature_rows import BUCKETS, SIGNATURES_TABLE
from servicekit.stores import CassandraSession
from services.tally.counters import ShardedCounters, Totals, totals_of

REBUILD_ATTEMPTS = 10
# Shard reads in flight at once, per Recount (the CLI's, or a tally
# worker's recovery): each reads every bucket of one (petition, shard).
READ_CONCURRENCY = 8


@dataclass(frozen=True)
class StoredRow:
    signer: str
    territory: str
    country: str
    valid: bool
    # An invalidation can arrive before the signature it invalidates; its
    # row then has no signature yet.
    signed: bool


@dataclass(frozen=True)
class Comparison:
    petition_id: str
    expected: Totals
    live: Totals

    @property
    def differences(self) -> list[str]:
        found = []
        if self.expected.total != self.live.total:
            found.append(f"total: stored {self.expected.total}, live {self.live.total}")
        for name, expected, live in (
            ("territory", self.expected.by_territory, self.live.by_territory),
            ("country", self.expected.by_country, self.live.by_country),
        ):
            for key in sorted(set(expected) | set(live)):
                if expected.get(key, 0) != live.get(key, 0):
                    found.append(f"{name} {key}: stored {expected.get(key, 0)}, live {live.get(key, 0)}")
        return found


def counts_of(rows: Sequence[StoredRow]) -> dict[str, int]:
    """The counter fields (total, t:<territory>, c:<country>) of valid rows."""
    counts: Counter[str] = Counter()
    for row in rows:
        if row.signed and row.valid:
            counts["total"] += 1
            if row.territory:
                counts[f"t:{row.territory}"] += 1
            if row.country:
                counts[f"c:{row.country}"] += 1
    return dict(counts)


def signer_values(rows: Sequence[StoredRow]) -> dict[str, str]:
    """The signer hash as the tally's apply script would have built it."""
    values = {}
    for row in rows:
        value = f"{row.territory}\t{row.country}" if row.signed else ""
        values[row.signer] = value if row.valid else f"!{value}"
    return values


class Recount:
    """Built by prepared(), so its statement is ready before the first call."""

    def __init__(
        self,
        cassandra: CassandraSession,
        counters: ShardedCounters,
        partitions: int,
        select: Any,
        concurrency: int = READ_CONCURRENCY,
    ):
        self._db = cassandra
        self._counters = counters
        self._partitions = list(range(partitions))
        self._select = select
        self._reads = asyncio.Semaphore(concurrency)

    @classmethod
    def prepared(cls, cassandra: CassandraSession, counters: ShardedCounters, partitions: int) -> Recount:
        """A recount over a started session, its statement prepared."""
        select = cassandra.prepare(
            f"SELECT signer, signature_id, territory, country, invalidated_at FROM {cassandra.table(SIGNATURES_TABLE)}"
            " WHERE petition_id = ? AND shard = ? AND bucket IN ?"
        )
        return cls(cassandra, counters, partitions, select)

    async def _rows(self, petition_id: str, shard: int) -> list[StoredRow]:
        """Every row of the petition's shard, all its buckets."""
        async with self._reads:
            stored = await self._db.execute(self._select, (petition_id, shard, BUCKETS))
        return [
            StoredRow(
                signer=row.signer,
                territory=row.territory or "",
                country=row.country or "",
                valid=row.invalidated_at is None,
                signed=row.signature_id is not None,
            )
            for row in stored
        ]

    async def compare(self, petition_id: str) -> Comparison:
        shards = await asyncio.gather(*(self._rows(petition_id, shard) for shard in self._partitions))
        expected: Counter[str] = Counter()
        for rows in shards:
            expected.update(counts_of(rows))
        live = await self._counters.totals(petition_id, self._partitions)
        return Comparison(petition_id, totals_of(dict(expected)), live)

    async def repair(self, petition_id: str) -> None:
        for shard in self._partitions:
            await self.repair_shard(petition_id, shard)

    async def repair_shard(self, petition_id: str, shard: int) -> None:
        """Replaces one (petition, shard)'s live state with what Cassandra
        holds, reading again while batches land on the shard meanwhile."""
        for _ in range(REBUILD_ATTEMPTS):
            applied = await self._counters.applied_marker(shard)
            rows = await self._rows(petition_id, shard)
            if await self._counters.rebuild(shard, petition_id, applied, signer_values(rows), counts_of(rows)):
                return
        raise RuntimeError(f"shard {shard} kept changing; run the repair again")
