"""The signatures table in Cassandra: the system of record.

Rows are written with an explicit write timestamp derived from the Kafka
offset, so that replays and duplicates resolve the same way everywhere:
among several accepted events of one person, the first in the log wins,
exactly as in the Redis counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servicekit.stores import CassandraSession

# Accept writes carry timestamps below any real clock (10^15 µs is 2001), so
# later writes made with the current time (invalidation marks) always win
# over them, while among themselves an earlier offset has a larger
# timestamp and so wins.
FIRST_WINS_BASE = 10**15


@dataclass(frozen=True)
class SignatureRow:
    petition_id: str
    shard: int
    signer: str
    signature_id: str
    method: str
    country: str
    territory: str
    signed_at: float
    ip_hash: str
    offset: int


@dataclass(frozen=True)
class InvalidationRow:
    petition_id: str
    shard: int
    signer: str
    reason: str
    invalidated_at: float


class SignatureArchive:
    def __init__(self, cassandra: CassandraSession, concurrency: int):
        self._db = cassandra
        self._concurrency = asyncio.Semaphore(concurrency)
        self._insert: Any = None
        self._invalidate: Any = None

    def prepare(self) -> None:
        self._insert = self._db.prepare(
            f"INSERT INTO {self._db.table('signatures')}"
            " (petition_id, shard, signer, signature_id, method, country, territory, signed_at, ip_hash,"
            " kafka_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        # Written with the current time, so it wins over any accept write.
        self._invalidate = self._db.prepare(
            f"UPDATE {self._db.table('signatures')} SET invalidated_at = ?, invalid_reason = ?"
            " WHERE petition_id = ? AND shard = ? AND signer = ?"
        )

    async def store(self, rows: Sequence[SignatureRow], invalidations: Sequence[InvalidationRow] = ()) -> None:
        """Writes every row; raises if any write fails (the batch is then
        retried whole, which the write timestamps make harmless)."""
        await asyncio.gather(
            *(self._store_one(row) for row in rows), *(self._invalidate_one(row) for row in invalidations)
        )

    async def _invalidate_one(self, row: InvalidationRow) -> None:
        async with self._concurrency:
            await self._db.execute(
                self._invalidate,
                (
                    datetime.fromtimestamp(row.invalidated_at, UTC),
                    row.reason,
                    row.petition_id,
                    row.shard,
                    row.signer,
                ),
            )

    async def _store_one(self, row: SignatureRow) -> None:
        async with self._concurrency:
            await self._db.execute(
                self._insert,
                (
                    row.petition_id,
                    row.shard,
                    row.signer,
                    row.signature_id,
                    row.method,
                    row.country,
                    row.territory,
                    datetime.fromtimestamp(row.signed_at, UTC),
                    row.ip_hash,
                    row.offset,
                    FIRST_WINS_BASE - row.offset,
                ),
            )
