"""Reading the system of record as the tally lays it out: a petition's rows
in signatures_by_bucket, partitioned by (petition_id, shard, bucket)
(servicekit/signature_rows.py), straight from Cassandra."""

from __future__ import annotations

from typing import Any

from cassandra.cluster import Session
from cassandra.query import ValueSequence

from servicekit.signature_rows import BUCKETS, SIGNATURES_TABLE, signature_bucket

DEFAULT_SHARDS = 6


def petition_rows(cassandra: Session, petition_id: str, columns: str, shards: int = DEFAULT_SHARDS) -> list[Any]:
    """Every stored row of the petition, over every shard and bucket."""
    return [row for shard in range(shards) for row in shard_rows(cassandra, petition_id, shard, columns)]


def shard_rows(cassandra: Session, petition_id: str, shard: int, columns: str) -> list[Any]:
    """The petition's rows that came through one Kafka partition."""
    return list(
        cassandra.execute(
            f"SELECT {columns} FROM {SIGNATURES_TABLE} WHERE petition_id = %s AND shard = %s AND bucket IN %s",
            # A plain tuple would be sent as a CQL list, which IN refuses.
            (petition_id, shard, ValueSequence(BUCKETS)),
        )
    )


def signer_row(
    cassandra: Session, petition_id: str, signer: str, columns: str, shards: int = DEFAULT_SHARDS
) -> Any | None:
    """The signer's row, by its bucket: one partition read per shard tried."""
    for shard in range(shards):
        row = cassandra.execute(
            f"SELECT {columns} FROM {SIGNATURES_TABLE} WHERE petition_id = %s AND shard = %s AND bucket = %s"
            " AND signer = %s",
            (petition_id, shard, signature_bucket(signer), signer),
        ).one()
        if row is not None:
            return row
    return None
