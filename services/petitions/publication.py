"""Finishing a change: its audit entry into the audit table, one
PetitionChanged on petition-events, and the petition's new state on the
compacted petition-state topic (which signing and tally fold into their
views).

The change itself was one conditional write that also put the entry in the
row's outbox, so nothing here can be half-done for good: a change whose
publication failed (a broker outage, a crash) keeps its outbox, and the
sweeper finishes it. Publication is therefore at least once: the audit row
of a version is written once (IF NOT EXISTS), event consumers key on petition
and version, and the state topic keeps the latest record per petition.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from petitions.v1 import events_pb2, petition_pb2, petitions_pb2
from servicekit.stores import ReplaceableProducer
from services.petitions.metric_defs import EVENTS_NOT_PUBLISHED, OUTBOX_FINISHED
from services.petitions.store import PetitionRecords

log = structlog.get_logger()


class Publication:
    def __init__(
        self,
        records: PetitionRecords,
        producer: ReplaceableProducer,
        events_topic: str,
        state_topic: str,
        timeout_seconds: float,
    ):
        self._records = records
        self._producer = producer
        self._events_topic = events_topic
        self._state_topic = state_topic
        self._timeout = timeout_seconds

    async def finish(self, petition: petition_pb2.Petition, entry: petitions_pb2.AuditEntry) -> bool:
        """Publishes one change; False (logged) when a store did not take it:
        the outbox keeps it for the sweeper."""
        key = petition.id.encode()
        try:
            await self._records.append_audit(entry)
            event = events_pb2.PetitionEvent(changed=events_pb2.PetitionChanged(entry=entry))
            # State last: a reader that sees the new state can find its event.
            await asyncio.wait_for(
                self._producer.send_and_wait(self._events_topic, event.SerializeToString(), key), self._timeout
            )
            await asyncio.wait_for(
                self._producer.send_and_wait(self._state_topic, petition.SerializeToString(), key), self._timeout
            )
            await self._records.clear_outbox(petition.id, petition.version)
        except Exception as error:
            log.warning(
                "petition change not published yet", petition=petition.id, version=petition.version, error=repr(error)
            )
            EVENTS_NOT_PUBLISHED.inc()
            return False
        return True

    async def sweep(self, older_than_seconds: float) -> int:
        """Finishes every change left in an outbox for longer than
        older_than_seconds; returns how many it finished."""
        finished = 0
        cutoff = time.time() - older_than_seconds
        for stored in await self._records.all():
            entry = stored.outbox
            if entry is None or entry.at.ToNanoseconds() / 1e9 > cutoff:
                continue
            if await self.finish(stored.petition, entry):
                OUTBOX_FINISHED.inc()
                finished += 1
        return finished

    async def run_sweeper(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                finished = await self.sweep(interval_seconds)
            except Exception as error:
                log.warning("outbox sweep failed", error=repr(error))
                continue
            if finished:
                log.info("outbox sweep finished changes", finished=finished)
