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

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiokafka.errors import KafkaError
from cassandra import DriverException
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisError

from petitions.v1 import events_pb2
from servicekit.petition_view import ViewPetition
from servicekit.stores import CassandraSession, ReplaceableProducer
from services.tally.counters import ShardedCounters
from services.tally.metric_defs import THRESHOLDS_CROSSED

# The rule itself is pure (threshold_rules.py: no store, no broker);
# re-exported here for the watcher's callers.
from services.tally.threshold_rules import Crossing as Crossing
from services.tally.threshold_rules import Threshold as Threshold
from services.tally.threshold_rules import Totals as Totals
from services.tally.threshold_rules import crossed as crossed

log = structlog.get_logger()

MAX_UNSEEN = 1_000


class Petitions(Protocol):
    """Where tally finds a petition: the process's petition view, folded
    from the petition-state topic (a synchronous read, no I/O)."""

    def get(self, petition_id: str) -> ViewPetition | None: ...


class ThresholdStore:
    """Built by prepared(), so its statements are ready before the first call."""

    def __init__(self, cassandra: CassandraSession, insert: Any, published: Any, select: Any):
        self._db = cassandra
        self._insert = insert
        self._published = published
        self._select = select

    @classmethod
    def prepared(cls, cassandra: CassandraSession) -> ThresholdStore:
        """A store over a started session, its statements prepared."""
        table = cassandra.table("thresholds_reached")
        return cls(
            cassandra,
            insert=cassandra.prepare(
                f"INSERT INTO {table} (petition_id, threshold_id, count, territories, reached_at, published)"
                " VALUES (?, ?, ?, ?, ?, false) IF NOT EXISTS"
            ),
            published=cassandra.prepare(
                f"UPDATE {table} SET published = true WHERE petition_id = ? AND threshold_id = ?"
            ),
            select=cassandra.prepare(f"SELECT * FROM {table} WHERE petition_id = ?"),
        )

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
        reached_at=round(row.reached_at.replace(tzinfo=UTC).timestamp() * 1000) / 1000 if row.reached_at else 0.0,
    )


class ThresholdWatcher:
    def __init__(
        self,
        petitions: Petitions,
        counters: ShardedCounters,
        partitions: Callable[[], Sequence[int]],
        store: ThresholdStore,
        producer: ReplaceableProducer,
        topic: str,
    ):
        self._petitions = petitions
        self._counters = counters
        self._partitions = partitions
        self._store = store
        self._producer = producer
        self._topic = topic
        # Thresholds known to be recorded, so a batch costs no Cassandra
        # read once a petition's crossings are known.
        self._known: dict[str, set[str]] = {}
        self._to_announce: list[Crossing] = []
        # Petitions a batch touched before this process's view knew them (a
        # petition created a moment ago: signing's view saw it, this one not
        # yet): checked again with every later check, so a crossing by the
        # very first signatures is not missed when nothing else arrives.
        self._unseen: set[str] = set()
        self._checking = asyncio.Lock()

    async def check(self, petition_ids: Iterable[str]) -> None:
        # One check at a time per process: the partitions of a poll are
        # applied concurrently, and two checks of one petition would race.
        async with self._checking:
            await self._announce_recorded()
            for petition_id in sorted({*petition_ids, *self._unseen}):
                await self._check_one(petition_id)
            await self._announce_recorded()

    async def check_unseen(self, every_seconds: float) -> None:
        """Runs for the life of a consumer: checks again, this often, the
        petitions a batch touched before the view knew them."""
        while True:
            await asyncio.sleep(every_seconds)
            if not self._unseen or not any(self._petitions.get(p) for p in self._unseen):
                continue
            try:
                await self.check(())
            except (DriverException, KafkaError, RedisError, OSError) as error:
                log.warning("threshold check of new petitions failed; the next one retries", error=repr(error))

    async def _check_one(self, petition_id: str) -> None:
        petition = self._petitions.get(petition_id)
        if petition is None:
            # Bounded: ids put on the log around signing (which checks them)
            # must not grow this without limit.
            if len(self._unseen) < MAX_UNSEEN:
                self._unseen.add(petition_id)
            return
        self._unseen.discard(petition_id)
        if not petition.thresholds:
            return
        if petition_id not in self._known:
            self._known[petition_id] = {c.threshold_id for c, _ in await self._store.reached(petition_id)}
        known = self._known[petition_id]
        if len(known) == len(petition.thresholds):
            return
        totals = await self._counters.totals(petition_id, self._partitions())
        for threshold in crossed(petition.thresholds, totals, known):
            # Milliseconds, as Cassandra keeps them, so a repeated
            # announcement (read back from the record) says the same.
            reached_at = round(time.time() * 1000) / 1000
            crossing = Crossing(petition_id, threshold.id, totals.total, totals.territories, reached_at)
            if await self._store.record(crossing):
                THRESHOLDS_CROSSED.inc()
                self._to_announce.append(crossing)
            # Otherwise another worker recorded it first and announces it;
            # if it dies before that, the sweep of unpublished records does.
            known.add(threshold.id)

    async def _announce_recorded(self) -> None:
        """Announces what this process recorded; a failure leaves the rest
        for the next check (the batch is retried)."""
        while self._to_announce:
            await self._publish(self._to_announce[0])
            self._to_announce.pop(0)

    async def republish_pending(self, older_than_seconds: float = 0.0) -> None:
        """Announces recorded crossings never marked published: their worker
        died between the record and the announcement. At start every one;
        in the periodic sweep only those older than a live worker needs."""
        cutoff = time.time() - older_than_seconds
        for crossing in await self._store.unpublished():
            if crossing.reached_at <= cutoff:
                await self._publish(crossing)

    async def sweep_unpublished(self, every_seconds: float, grace_seconds: float) -> None:
        """Runs for the life of a consumer, so an announcement lost with a
        dead worker goes out without waiting for some worker's restart."""
        while True:
            await asyncio.sleep(every_seconds)
            try:
                async with self._checking:
                    await self.republish_pending(older_than_seconds=grace_seconds)
            except (DriverException, KafkaError, OSError) as error:
                log.warning("threshold sweep failed; next sweep retries", error=repr(error))

    async def _publish(self, crossing: Crossing) -> None:
        reached_at = Timestamp()
        reached_at.FromMilliseconds(round(crossing.reached_at * 1000))
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
