"""Closes petitions whose signature period has ended, and announces it.

Sign refuses a petition past its deadline on its own; this makes the state
say so too (CLOSED) and publishes PetitionClosed once. Every signing process
runs the loop; the lightweight transaction lets exactly one of them close a
given petition and publish the event.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka.errors import KafkaError
from cassandra import DriverException
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2
from servicekit.stores import ReplaceableProducer
from services.catalogue.cache import CachedCatalogue
from services.catalogue.model import Petition, PetitionState
from services.catalogue.store import PetitionStore
from services.signing.metric_defs import EVENTS_NOT_PUBLISHED

log = structlog.get_logger()


class PetitionEvents:
    """Publishes lifecycle events on the petition-events topic (key: id).

    The catalogue row is the truth about a petition's state; the event is
    its announcement. If Kafka refuses it, the state change stands, the
    failure is logged and counted, and the change is not undone."""

    def __init__(self, producer: ReplaceableProducer, topic: str):
        self._producer = producer
        self._topic = topic

    async def closed(self, petition: Petition) -> bool:
        return await self._publish(
            petition,
            events_pb2.PetitionEvent(closed=events_pb2.PetitionClosed(petition_id=petition.id, at=_at(petition))),
        )

    async def opened(self, petition: Petition) -> bool:
        return await self._publish(
            petition,
            events_pb2.PetitionEvent(opened=events_pb2.PetitionOpened(petition_id=petition.id, at=_at(petition))),
        )

    async def _publish(self, petition: Petition, event: events_pb2.PetitionEvent) -> bool:
        try:
            await self._producer.send_and_wait(self._topic, event.SerializeToString(), key=petition.id.encode())
        except KafkaError as error:
            EVENTS_NOT_PUBLISHED.inc()
            log.error("petition event not published", petition_id=petition.id, error=repr(error))
            return False
        return True


def _at(petition: Petition) -> Timestamp:
    at = Timestamp()
    at.FromNanoseconds(int(petition.updated_at * 1e9))
    return at


class DeadlineCloser:
    def __init__(self, store: PetitionStore, cache: CachedCatalogue, events: PetitionEvents, interval_seconds: float):
        self._store = store
        self._cache = cache
        self._events = events
        self._interval = interval_seconds

    async def close_due(self, now: float) -> list[str]:
        """Closes every open petition whose deadline has passed; returns the
        ids this process closed."""
        closed = []
        for petition in await self._store.list_all():
            if petition.state is not PetitionState.OPEN or petition.closes_at is None or petition.closes_at > now:
                continue
            changed = await self._store.change_state(petition, PetitionState.CLOSED)
            if changed is None:
                continue  # another process closed it (or an admin changed it) first
            self._cache.forget(petition.id)
            await self._events.closed(changed)
            closed.append(petition.id)
            log.info("petition closed at its deadline", petition_id=petition.id)
        return closed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.close_due(time.time())
            except DriverException as error:
                # Cassandra unreachable this round; the next round retries.
                log.error("deadline check failed", error=repr(error))
