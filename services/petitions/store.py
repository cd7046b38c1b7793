"""The petitions service's tables in Cassandra (services/migrations.py).

A petition is one row of `petition_records`: its whole petitions.v1.Petition
message, its version (every change is one conditional write on it, so two
staff deciding at once cannot both win), and the outbox holding the audit
entry of its latest change until that entry is published. The audit trail
(`petition_audit`) is append-only: rows keyed by the version they record,
written with IF NOT EXISTS, never updated or deleted by any code path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.query import PreparedStatement

from petitions.v1 import petition_pb2, petitions_pb2
from servicekit.stores import CassandraSession

LEGISLATURE_KEY = "current"
# Rows "ended:<name>" of the legislatures table say which legislature
# followed <name> (legislature names have no ':').
_SUCCESSION = "ended:"


@dataclass(frozen=True)
class StoredPetition:
    petition: petition_pb2.Petition
    # The audit entry whose publication is not finished, if any.
    outbox: petitions_pb2.AuditEntry | None


@dataclass(frozen=True)
class Statements:
    insert: PreparedStatement
    change: PreparedStatement
    select: PreparedStatement
    clear_outbox: PreparedStatement
    insert_audit: PreparedStatement
    select_audit: PreparedStatement
    insert_sponsor: PreparedStatement
    delete_sponsor: PreparedStatement
    select_legislature: PreparedStatement
    insert_legislature: PreparedStatement
    change_legislature: PreparedStatement


class PetitionRecords:
    """Prepared statements over a started session; built by open_records."""

    def __init__(self, db: CassandraSession, statements: Statements):
        self._db = db
        self._q = statements

    async def create(self, petition: petition_pb2.Petition, entry: petitions_pb2.AuditEntry) -> bool:
        """Inserts a new petition with its first audit entry in the outbox;
        False when the id is taken."""
        rows = await self._db.execute(
            self._q.insert,
            (
                petition.id,
                petition.version,
                petition_pb2.PetitionState.Name(petition.state),
                petition.SerializeToString(),
                entry.SerializeToString(),
                _at(petition.created_at.ToNanoseconds()),
                _at(petition.updated_at.ToNanoseconds()),
            ),
        )
        return bool(rows and rows[0][0])  # an LWT answer starts with [applied]

    async def change(
        self, petition: petition_pb2.Petition, entry: petitions_pb2.AuditEntry, expected_version: int
    ) -> bool:
        """Writes petition (its version already bumped) if the stored version
        is still expected_version: the one conditional write of a change."""
        rows = await self._db.execute(
            self._q.change,
            (
                petition.version,
                petition_pb2.PetitionState.Name(petition.state),
                petition.SerializeToString(),
                entry.SerializeToString(),
                _at(petition.updated_at.ToNanoseconds()),
                petition.id,
                expected_version,
            ),
        )
        return bool(rows and rows[0][0])

    async def get(self, petition_id: str) -> StoredPetition | None:
        rows = await self._db.execute(self._q.select, (petition_id,))
        return _stored(rows[0]) if rows else None

    async def all(self) -> list[StoredPetition]:
        """Every petition (a few thousand rows at most: one per petition)."""
        rows = await self._db.execute(f"SELECT id, record, outbox FROM {self._db.table('petition_records')}")
        return [_stored(row) for row in rows]

    async def clear_outbox(self, petition_id: str, version: int) -> None:
        # Conditional: a newer change has put its own entry there.
        await self._db.execute(self._q.clear_outbox, (petition_id, version))

    async def append_audit(self, entry: petitions_pb2.AuditEntry) -> None:
        """Idempotent: the row of a version is written once, whoever repeats it."""
        await self._db.execute(
            self._q.insert_audit,
            (entry.petition_id, entry.version, _at(entry.at.ToNanoseconds()), entry.SerializeToString()),
        )

    async def audit_of(self, petition_id: str) -> list[petitions_pb2.AuditEntry]:
        rows = await self._db.execute(self._q.select_audit, (petition_id,))
        return [petitions_pb2.AuditEntry.FromString(row.entry) for row in rows]

    async def whole_audit(self) -> list[petitions_pb2.AuditEntry]:
        rows = await self._db.execute(f"SELECT entry FROM {self._db.table('petition_audit')}")
        return [petitions_pb2.AuditEntry.FromString(row.entry) for row in rows]

    async def add_sponsor(self, petition_id: str, sponsor: str, at_nanos: int) -> bool:
        """True the first time this sponsor supports this petition."""
        rows = await self._db.execute(self._q.insert_sponsor, (petition_id, sponsor, _at(at_nanos)))
        return bool(rows and rows[0][0])

    async def remove_sponsor(self, petition_id: str, sponsor: str) -> None:
        """Takes back a sponsor row whose count was refused or failed, so the
        person is not left recorded but uncounted (and counted on a retry)."""
        await self._db.execute(self._q.delete_sponsor, (petition_id, sponsor))

    async def current_legislature(self, first: str) -> str:
        """The current legislature; the first one is written on first use."""
        rows = await self._db.execute(self._q.select_legislature, (LEGISLATURE_KEY,))
        if rows:
            return str(rows[0].current)
        await self._db.execute(self._q.insert_legislature, (LEGISLATURE_KEY, first, datetime.now(UTC)))
        rows = await self._db.execute(self._q.select_legislature, (LEGISLATURE_KEY,))
        return str(rows[0].current)

    async def successor_of(self, legislature: str) -> str | None:
        """The legislature recorded as following an ended (or ending) one."""
        rows = await self._db.execute(self._q.select_legislature, (_SUCCESSION + legislature,))
        return str(rows[0].current) if rows else None

    async def record_successor(self, ending: str, beginning: str) -> str:
        """Records, once, which legislature follows `ending` (before the
        current one is moved, so a retry after a crash can tell the ended
        legislature from any other); returns the successor on record, which
        is another one when a concurrent close named it first."""
        rows = await self._db.execute(self._q.insert_legislature, (_SUCCESSION + ending, beginning, datetime.now(UTC)))
        # A refused IF NOT EXISTS answers with the row already there.
        return beginning if rows[0][0] else str(rows[0].current)

    async def change_legislature(self, ending: str, beginning: str) -> bool:
        rows = await self._db.execute(
            self._q.change_legislature, (beginning, datetime.now(UTC), LEGISLATURE_KEY, ending)
        )
        return bool(rows and rows[0][0])


@asynccontextmanager
async def open_records(db: CassandraSession) -> AsyncIterator[PetitionRecords]:
    """The store, ready: every statement prepared before it is handed out."""
    records = db.table("petition_records")
    audit = db.table("petition_audit")

    def prepare(cql: str, *, serial_read: bool = False) -> PreparedStatement:
        statement: PreparedStatement = db.prepare(cql)
        if serial_read:
            # A read that decides a change sees every committed conditional
            # write (SERIAL), not a replica that missed the latest one.
            statement.consistency_level = ConsistencyLevel.SERIAL
        return statement

    statements = Statements(
        insert=prepare(
            f"INSERT INTO {records} (id, version, state, record, outbox, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        ),
        change=prepare(
            f"UPDATE {records} SET version = ?, state = ?, record = ?, outbox = ?, updated_at = ?"
            " WHERE id = ? IF version = ?"
        ),
        select=prepare(f"SELECT id, record, outbox FROM {records} WHERE id = ?", serial_read=True),
        clear_outbox=prepare(f"UPDATE {records} SET outbox = null WHERE id = ? IF version = ?"),
        insert_audit=prepare(
            f"INSERT INTO {audit} (petition_id, version, at, entry) VALUES (?, ?, ?, ?) IF NOT EXISTS"
        ),
        select_audit=prepare(f"SELECT entry FROM {audit} WHERE petition_id = ? ORDER BY version ASC"),
        insert_sponsor=prepare(
            f"INSERT INTO {db.table('petition_sponsors')} (petition_id, sponsor, sponsored_at)"
            " VALUES (?, ?, ?) IF NOT EXISTS"
        ),
        delete_sponsor=prepare(
            f"DELETE FROM {db.table('petition_sponsors')} WHERE petition_id = ? AND sponsor = ? IF EXISTS"
        ),
        select_legislature=prepare(f"SELECT current FROM {db.table('legislatures')} WHERE name = ?", serial_read=True),
        insert_legislature=prepare(
            f"INSERT INTO {db.table('legislatures')} (name, current, changed_at) VALUES (?, ?, ?) IF NOT EXISTS"
        ),
        change_legislature=prepare(
            f"UPDATE {db.table('legislatures')} SET current = ?, changed_at = ? WHERE name = ? IF current = ?"
        ),
    )
    yield PetitionRecords(db, statements)


def _stored(row: Any) -> StoredPetition:
    return StoredPetition(
        petition=petition_pb2.Petition.FromString(row.record),
        outbox=petitions_pb2.AuditEntry.FromString(row.outbox) if row.outbox else None,
    )


def _at(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, UTC)
