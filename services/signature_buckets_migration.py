"""The data step of `petitions migrate` that moved the system of record from
`signatures` (PRIMARY KEY ((petition_id, shard), signer): a hot petition's
partition grew without bound) to `signatures_by_bucket` (the bucket in the
partition key, servicekit/signature_rows.py). Cassandra cannot change a
primary key, so the rows are copied.

Each cell is copied with its own write timestamp (WRITETIME), which is
what decides between writes in this table: an accept's is derived from its
Kafka offset (the first signature in the log wins), an invalidation's is
the time it was made (it wins over any accept). So the copy is idempotent
-- a second copy writes the same cells at the same timestamps and changes
nothing -- and it never undoes a write the tally made in the new table
meanwhile: a later invalidation keeps winning, and a replayed accept lands
on the same row with the same timestamp.

The copy runs on every migrate while the old table exists, so rows an old
tally wrote there during a roll-out are copied by the next migrate. Once no
process of the old release runs and a migrate has run since, the old table
can be dropped by hand (DROP TABLE <keyspace>.signatures); migrate never
drops it, since it cannot know that no old process is still writing.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from typing import Any

from cassandra.query import SimpleStatement

from servicekit.signature_rows import SIGNATURES_TABLE, UNBUCKETED_SIGNATURES_TABLE, signature_bucket
from servicekit.stores import CassandraSession

# Every non-key column of both tables.
VALUE_COLUMNS = (
    "signature_id",
    "method",
    "country",
    "territory",
    "signed_at",
    "ip_hash",
    "kafka_offset",
    "invalidated_at",
    "invalid_reason",
)
PAGE_ROWS = 1_000
WRITE_CONCURRENCY = 32


async def table_exists(cassandra: CassandraSession, table: str) -> bool:
    rows = await cassandra.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
        (cassandra.keyspace, table),
    )
    return bool(rows)


class _Writer:
    """Writes one old row's cells into the new table, one statement per
    distinct write timestamp among its cells (an accept's cells share one,
    an invalidation's two share another)."""

    def __init__(self, cassandra: CassandraSession):
        self._db = cassandra
        self._table = cassandra.table(SIGNATURES_TABLE)
        self._prepared: dict[tuple[bool, tuple[str, ...]], Any] = {}
        self._writes = asyncio.Semaphore(WRITE_CONCURRENCY)

    def _statement(self, columns: tuple[str, ...]) -> tuple[Any, bool]:
        # The accept was an INSERT (it made the row, with a row marker); an
        # invalidation an UPDATE: copied the same way, the row exists in
        # the new table exactly when it did in the old one.
        inserting = "signature_id" in columns
        key = (inserting, columns)
        if key not in self._prepared:
            if inserting:
                names = ", ".join(("petition_id", "shard", "bucket", "signer", *columns))
                marks = ", ".join("?" * (4 + len(columns)))
                cql = f"INSERT INTO {self._table} ({names}) VALUES ({marks}) USING TIMESTAMP ?"
            else:
                assignments = ", ".join(f"{column} = ?" for column in columns)
                cql = (
                    f"UPDATE {self._table} USING TIMESTAMP ? SET {assignments}"
                    " WHERE petition_id = ? AND shard = ? AND bucket = ? AND signer = ?"
                )
            self._prepared[key] = self._db.prepare(cql)
        return self._prepared[key], inserting

    async def copy(self, row: Any) -> None:
        by_timestamp: defaultdict[int, list[str]] = defaultdict(list)
        for column in VALUE_COLUMNS:
            written = getattr(row, f"writetime_{column}")
            if written is not None:
                by_timestamp[written].append(column)
        key = (row.petition_id, row.shard, signature_bucket(row.signer), row.signer)
        for written, columns in by_timestamp.items():
            statement, inserting = self._statement(tuple(columns))
            values = [getattr(row, column) for column in columns]
            parameters = [*key, *values, written] if inserting else [written, *values, *key]
            async with self._writes:
                await self._db.execute(statement, parameters)


async def copy_unbucketed_signatures(cassandra: CassandraSession) -> int:
    """Copies every row of the old table into the new one, if the old table
    exists; returns how many rows it read (0 when there is none)."""
    if not await table_exists(cassandra, UNBUCKETED_SIGNATURES_TABLE):
        return 0
    writetimes = ", ".join(f"WRITETIME({column}) AS writetime_{column}" for column in VALUE_COLUMNS)
    select = SimpleStatement(
        f"SELECT petition_id, shard, signer, {', '.join(VALUE_COLUMNS)}, {writetimes}"
        f" FROM {cassandra.table(UNBUCKETED_SIGNATURES_TABLE)}",
        fetch_size=PAGE_ROWS,
    )
    writer = _Writer(cassandra)
    loop = asyncio.get_running_loop()
    paging_state: bytes | None = None
    copied = 0
    while True:
        # A page at a time, so a table of millions of rows is never held
        # whole (CassandraSession.execute collects every page).
        page = await loop.run_in_executor(
            None, functools.partial(cassandra.session.execute, select, paging_state=paging_state)
        )
        rows = list(page.current_rows)
        await asyncio.gather(*(writer.copy(row) for row in rows))
        copied += len(rows)
        paging_state = page.paging_state
        if paging_state is None:
            return copied
