"""Reading a petition's stored signatures from Cassandra, shard by shard
(each read names every bucket of its shard, as the recount's do), for
SelectSignatures (moderation: rare, so a full read of one petition is
acceptable)."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Any

from cassandra import OperationTimedOut, ReadFailure, ReadTimeout, Unavailable
from cassandra.cluster import NoHostAvailable

from servicekit.errors import DomainError, ErrorKind
from servicekit.signature_rows import BUCKETS, SIGNATURES_TABLE
from servicekit.stores import CassandraSession
from services.tally.signature_selection import StoredSignature

# Shard reads in flight at once for one SelectSignatures.
READ_CONCURRENCY = 8


class SignatureLookup:
    """Built by prepared(), so its statement is ready before the first call."""

    def __init__(self, cassandra: CassandraSession, shards: int, select: Any, concurrency: int = READ_CONCURRENCY):
        self._db = cassandra
        self._shards = shards
        self._select = select
        self._concurrency = concurrency

    @classmethod
    def prepared(cls, cassandra: CassandraSession, shards: int) -> SignatureLookup:
        """A lookup over a started session, its statement prepared."""
        select = cassandra.prepare(
            f"SELECT signer, ip_hash, signed_at, invalidated_at FROM {cassandra.table(SIGNATURES_TABLE)}"
            " WHERE petition_id = ? AND shard = ? AND bucket IN ?"
        )
        return cls(cassandra, shards, select)

    async def __call__(self, petition_id: str) -> list[StoredSignature]:
        # Per call: concurrent SelectSignatures each get their own bound.
        reads = asyncio.Semaphore(self._concurrency)

        async def shard_rows(shard: int) -> list[Any]:
            async with reads:
                return await self._db.execute(self._select, (petition_id, shard, BUCKETS))

        try:
            shards = await asyncio.gather(*(shard_rows(shard) for shard in range(self._shards)))
        # Too few replicas answered in time (a node just died and the
        # coordinator has not marked it down yet, or the cluster is
        # overloaded): a read to try again, not an unknown failure.
        except (ReadTimeout, ReadFailure, Unavailable, OperationTimedOut, NoHostAvailable) as error:
            raise DomainError(
                ErrorKind.UNAVAILABLE,
                "SIGNATURES_UNAVAILABLE",
                f"the system of record did not answer at its consistency level: {type(error).__name__}; try again",
                retry_after_seconds=2,
            ) from None
        return [
            StoredSignature(
                signer=row.signer,
                ip_hash=row.ip_hash or "",
                signed_at=row.signed_at.replace(tzinfo=UTC).timestamp() if row.signed_at else 0.0,
                invalidated=row.invalidated_at is not None,
            )
            for rows in shards
            for row in rows
        ]
