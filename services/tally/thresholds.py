"""Thresholds with legal effect: detected after each batch, recorded exactly
once, announced on the petition-events topic.

A crossing is decided from the summed counters, not from the batch's delta,
so a batch replayed after a crash (whose counts were already applied) still
leads to the check. The record is a lightweight transaction (first writer
wins across tally workers); its `published` flag is set only after Kafka
acknowledged ThresholdReached, and unpublished records are published again
at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2
from servicekit.stores import CassandraSession, ReplaceableProducer
from services.catalogue.cache import CachedCatalogue
from services.catalogue.model import Threshold
from services.tally.counters import ShardedCounters, Totals
from services.tally.metric_defs import THRESHOLDS_CROSSED

log = structlog.get_logger()


@dataclass(frozen=True)
class Crossing:
    petition_id: str
    threshold_id: str
    count: int
    territories: int
    reached_at: float


def crossed(thresholds: Iterable[Threshold], totals: Totals, already: set[str]) -> list[Threshold]:
    """The thresholds these totals satisfy that were not reached before. A
    territorial rule (e.g. 500,000 from at least 30 départements) needs both
    conditions at once."""
    return [
        t
        for t in thresholds
        if t.id not in already and totals.total >= t.signatures and totals.territories >= t.min_territories
    ]


class ThresholdStore:
    def __init__(self, cassandra: CassandraSession):
        self._db = cassandra
        self._insert: Any = None
        self._published: Any = None
        self._select: Any = None

    def prepare(self) -> None:
        table = self._db.table("thresholds_reached")
        self._insert = self._db.prepare(
            f"INSERT INTO {table} (petition_id, threshold_id, count, territories, reached_at, published)"
            " VALUES (?, ?, ?, ?, ?, false) IF NOT EXISTS"
        )
        self._published = self._db.prepare(
            f"UPDATE {table} SET published = true WHERE petition_id = ? AND threshold_id = ?"
        )
        self._select = self._db.prepare(f"SELECT * FROM {table} WHERE petition_id = ?")

    async def record(self, crossing: Crossing) -> bool:
        """True when this call recorded the crossing (it was new)."""
        rows = await self._db.execute(
            self._insert,
            (
                crossing.petition_id,
                crossing.threshold_id,
                crossing.count,
                crossing.territories,
                datetime.fromtimestamp(crossing.reached_at, UTC),
            ),
        )
        return bool(rows and rows[0][0])

    async def mark_published(self, crossing: Crossing) -> None:
        await self._db.execute(self._published, (crossing.petition_id, crossing.threshold_id))

    async def reached(self, petition_id: str) -> list[tuple[Crossing, bool]]:
        return [(_crossing(row), bool(row.published)) for row in await self._db.execute(self._select, (petition_id,))]

    async def unpublished(self) -> list[Crossing]:
        rows = await self._db.execute(f"SELECT * FROM {self._db.table('thresholds_reached')}")
        return [_crossing(row) for row in rows if not row.published]


def _crossing(row: Any) -> Crossing:
    return Crossing(
        petition_id=row.petition_id,
        threshold_id=row.threshold_id,
        count=int(row.count or 0),
        territories=int(row.territories or 0),
        reached_at=row.reached_at.replace(tzinfo=UTC).timestamp() if row.reached_at else 0.0,
    )


class ThresholdWatcher:
    def __init__(
        self,
        catalogue: CachedCatalogue,
        counters: ShardedCounters,
        partitions: Callable[[], Sequence[int]],
        store: ThresholdStore,
        producer: ReplaceableProducer,
        topic: str,
    ):
        self._catalogue = catalogue
        self._counters = counters
        self._partitions = partitions
        self._store = store
        self._producer = producer
        self._topic = topic
        # Thresholds known to be recorded, so a batch costs no Cassandra
        # read once a petition's crossings are known.
        self._known: dict[str, set[str]] = {}

    async def check(self, petition_ids: Iterable[str]) -> None:
        for petition_id in petition_ids:
            petition = await self._catalogue.get(petition_id)
            if petition is None or not petition.thresholds:
                continue
            if petition_id not in self._known:
                self._known[petition_id] = {c.threshold_id for c, _ in await self._store.reached(petition_id)}
            known = self._known[petition_id]
            if len(known) == len(petition.thresholds):
                continue
            totals = await self._counters.totals(petition_id, self._partitions())
            for threshold in crossed(petition.thresholds, totals, known):
                crossing = Crossing(
                    petition_id,
                    threshold.id,
                    totals.total,
                    totals.territories,
                    time.time(),
                )
                if await self._store.record(crossing):
                    THRESHOLDS_CROSSED.inc()
                    await self._publish(crossing)
                else:
                    # Recorded before (another worker, or this batch's
                    # earlier attempt): publish it if that never finished.
                    for recorded, published in await self._store.reached(petition_id):
                        if recorded.threshold_id == threshold.id and not published:
                            await self._publish(recorded)
                known.add(threshold.id)

    async def republish_pending(self) -> None:
        for crossing in await self._store.unpublished():
            await self._publish(crossing)

    async def _publish(self, crossing: Crossing) -> None:
        reached_at = Timestamp()
        reached_at.FromNanoseconds(int(crossing.reached_at * 1e9))
        event = events_pb2.PetitionEvent(
            threshold_reached=events_pb2.ThresholdReached(
                petition_id=crossing.petition_id,
                threshold_id=crossing.threshold_id,
                count=crossing.count,
                territories=crossing.territories,
                reached_at=reached_at,
            )
        )
        await self._producer.send_and_wait(self._topic, event.SerializeToString(), key=crossing.petition_id.encode())
        await self._store.mark_published(crossing)
        log.info("threshold reached", petition_id=crossing.petition_id, threshold_id=crossing.threshold_id)
