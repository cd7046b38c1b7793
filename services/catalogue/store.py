"""The petitions table in Cassandra."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from servicekit.stores import CassandraSession
from services.catalogue.model import Eligibility, Petition, PetitionState, Threshold


class PetitionStore:
    """Reads and writes petitions. A petition is one row; thresholds and
    eligibility are JSON columns because they are always read whole."""

    def __init__(self, cassandra: CassandraSession):
        self._db = cassandra
        self._insert: Any = None
        self._select: Any = None
        self._update_state: Any = None

    def prepare(self) -> None:
        self._insert = self._db.prepare(
            f"INSERT INTO {self._db.table('petitions')}"
            " (id, title, text, author, state, opens_at, closes_at, thresholds, committee, eligibility,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " IF NOT EXISTS"
        )
        self._select = self._db.prepare(f"SELECT * FROM {self._db.table('petitions')} WHERE id = ?")
        # Lightweight transaction so that two admins cannot interleave
        # open/close on a stale read.
        self._update_state = self._db.prepare(
            f"UPDATE {self._db.table('petitions')} SET state = ?, updated_at = ? WHERE id = ? IF state = ?"
        )

    async def create(self, petition: Petition) -> bool:
        """Inserts a new petition; False when the id is taken."""
        rows = await self._db.execute(
            self._insert,
            (
                petition.id,
                petition.title,
                petition.text,
                petition.author,
                petition.state.value,
                _to_datetime(petition.opens_at),
                _to_datetime(petition.closes_at),
                json.dumps([asdict(t) for t in petition.thresholds]),
                petition.committee,
                json.dumps(
                    {
                        "countries": sorted(petition.eligibility.countries),
                        "adults_only": petition.eligibility.adults_only,
                    }
                ),
                _to_datetime(petition.created_at),
                _to_datetime(petition.updated_at),
            ),
        )
        return bool(rows and rows[0][0])  # an LWT result starts with [applied]

    async def get(self, petition_id: str) -> Petition | None:
        rows = await self._db.execute(self._select, (petition_id,))
        return _petition_of(rows[0]) if rows else None

    async def change_state(self, petition: Petition, new_state: PetitionState) -> Petition | None:
        """Moves a petition from the state it was read in to new_state; None
        when somebody changed it in between."""
        now = time.time()
        rows = await self._db.execute(
            self._update_state, (new_state.value, _to_datetime(now), petition.id, petition.state.value)
        )
        if not rows or not rows[0][0]:
            return None
        return replace(petition, state=new_state, updated_at=now)

    async def list_all(self) -> list[Petition]:
        rows = await self._db.execute(f"SELECT * FROM {self._db.table('petitions')}")
        return [_petition_of(row) for row in rows]


def _to_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _to_seconds(value: datetime | None) -> float | None:
    if value is None:
        return None
    # The driver returns naive datetimes in UTC.
    return value.replace(tzinfo=UTC).timestamp()


def _petition_of(row: Any) -> Petition:
    eligibility = json.loads(row.eligibility or "{}")
    return Petition(
        id=row.id,
        title=row.title or "",
        text=row.text or "",
        author=row.author or "",
        state=PetitionState(row.state),
        opens_at=_to_seconds(row.opens_at),
        closes_at=_to_seconds(row.closes_at),
        thresholds=tuple(Threshold(**t) for t in json.loads(row.thresholds or "[]")),
        committee=row.committee or "",
        eligibility=Eligibility(
            countries=frozenset(eligibility.get("countries", [])),
            adults_only=bool(eligibility.get("adults_only", False)),
        ),
        created_at=_to_seconds(row.created_at) or 0.0,
        updated_at=_to_seconds(row.updated_at) or 0.0,
    )
