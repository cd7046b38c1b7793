"""The signatures table in Cassandra: the system of record, one row per
(petition, signer) in the partition (petition, shard, bucket) (see
servicekit/signature_rows.py).

Rows are written with an explicit write timestamp derived from the Kafka
offset, so that replays and duplicates resolve the same way everywhere:
among several accepted events of one person, the first in the log wins,
exactly as in the Redis counters.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.query import BatchStatement, BatchType

from servicekit.signature_rows import SIGNATURES_TABLE, signature_bucket
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
    """Writes a partition batch's signatures as unlogged batches of rows that
    share one Cassandra partition (petition, shard, bucket): one mutation
    each on the replica, instead of one request per row, without the cost of
    a logged (multi-partition) batch. The bucket comes from the signer alone,
    so a replayed or repeated signature lands on the row the first one made.

    Built by prepared(), so its statements are ready before the first write."""

    def __init__(self, cassandra: CassandraSession, concurrency: int, rows_per_batch: int, insert: Any, mark: Any):
        self._db = cassandra
        self._concurrency = asyncio.Semaphore(concurrency)
        self._rows_per_batch = rows_per_batch
        self._insert = insert
        self._invalidate = mark

    @classmethod
    def prepared(cls, cassandra: CassandraSession, concurrency: int, rows_per_batch: int) -> SignatureArchive:
        """An archive over a started session, its statements prepared."""
        table = cassandra.table(SIGNATURES_TABLE)
        insert = cassandra.prepare(
            f"INSERT INTO {table}"
            " (petition_id, shard, bucket, signer, signature_id, method, country, territory, signed_at, ip_hash,"
            " kafka_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        # Written with the current time, so it wins over any accept write.
        mark = cassandra.prepare(
            f"UPDATE {table} SET invalidated_at = ?, invalid_reason = ?"
            " WHERE petition_id = ? AND shard = ? AND bucket = ? AND signer = ?"
        )
        return cls(cassandra, concurrency, rows_per_batch, insert, mark)

    async def store(self, rows: Sequence[SignatureRow], invalidations: Sequence[InvalidationRow] = ()) -> None:
        """Writes every row; raises if any write fails (the batch is then
        retried whole, which the write timestamps make harmless)."""
        await asyncio.gather(
            *(self._store_batch(batch) for batch in self._single_partition_batches(rows)),
            *(self._invalidate_one(row) for row in invalidations),
        )

    def _single_partition_batches(self, rows: Sequence[SignatureRow]) -> Iterator[Sequence[SignatureRow]]:
        by_partition: defaultdict[tuple[str, int, int], list[SignatureRow]] = defaultdict(list)
        for row in rows:
            by_partition[(row.petition_id, row.shard, signature_bucket(row.signer))].append(row)
        for partition_rows in by_partition.values():
            for start in range(0, len(partition_rows), self._rows_per_batch):
                yield partition_rows[start : start + self._rows_per_batch]

    async def _invalidate_one(self, row: InvalidationRow) -> None:
        async with self._concurrency:
            await self._db.execute(
                self._invalidate,
                (
                    datetime.fromtimestamp(row.invalidated_at, UTC),
                    row.reason,
                    row.petition_id,
                    row.shard,
                    signature_bucket(row.signer),
                    row.signer,
                ),
            )

    async def _store_batch(self, rows: Sequence[SignatureRow]) -> None:
        # Each insert keeps its own offset-derived timestamp inside the
        # batch, so two rows of one signer in a batch resolve as anywhere.
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for row in rows:
            batch.add(
                self._insert,
                (
                    row.petition_id,
                    row.shard,
                    signature_bucket(row.signer),
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
        async with self._concurrency:
            await self._db.execute(batch)
