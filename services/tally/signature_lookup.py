"""Reading a petition's stored signatures from Cassandra, shard by shard,
for SelectSignatures (moderation: rare, so a full read of one petition is
acceptable)."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Any

from servicekit.stores import CassandraSession
from services.tally.signature_selection import StoredSignature


class SignatureLookup:
    """Built by prepared(), so its statement is ready before the first call."""

    def __init__(self, cassandra: CassandraSession, shards: int, select: Any):
        self._db = cassandra
        self._shards = shards
        self._select = select

    @classmethod
    def prepared(cls, cassandra: CassandraSession, shards: int) -> SignatureLookup:
        """A lookup over a started session, its statement prepared."""
        select = cassandra.prepare(
            f"SELECT signer, ip_hash, signed_at, invalidated_at FROM {cassandra.table('signatures')}"
            " WHERE petition_id = ? AND shard = ?"
        )
        return cls(cassandra, shards, select)

    async def __call__(self, petition_id: str) -> list[StoredSignature]:
        shards = await asyncio.gather(
            *(self._db.execute(self._select, (petition_id, shard)) for shard in range(self._shards))
        )
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
