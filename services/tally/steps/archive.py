"""Archive: the batch's signatures and invalidations on record in
Cassandra. It comes before counting: a signature is counted only once it
is on record, which is what lets a lost Redis shard be rebuilt from
Cassandra (count.py)."""

from __future__ import annotations

import time

from petitions.v1 import events_pb2, identity_pb2
from services.tally.archive import InvalidationRow, SignatureArchive, SignatureRow
from services.tally.counters import ACCEPT, INVALIDATE, CountedEvent
from services.tally.steps.protocol import Batch, Forward, Step

_METHOD_NAMES = {
    identity_pb2.VERIFICATION_METHOD_OIDC: "oidc",
    identity_pb2.VERIFICATION_METHOD_EMAIL: "email",
}


class Archive(Forward):
    def __init__(self, archive: SignatureArchive, next_step: Step):
        super().__init__(next_step)
        self._archive = archive

    async def submit(self, batch: Batch) -> None:
        shard = batch.partition.partition
        rows: list[SignatureRow] = []
        invalidations: list[InvalidationRow] = []
        for message, event in batch.events:
            if event.HasField("accepted"):
                rows.append(signature_row(shard, message.offset, event.accepted))
                batch.signed_petitions.add(event.accepted.petition_id)
            else:
                invalidations.append(invalidation_row(shard, event.invalidated))
            batch.counted.append(counted_event(message.offset, event))
        await self._archive.store(rows, invalidations)
        await self.next_step.submit(batch)


def signature_row(shard: int, offset: int, accepted: events_pb2.SignatureAccepted) -> SignatureRow:
    return SignatureRow(
        petition_id=accepted.petition_id,
        shard=shard,
        signer=accepted.signer,
        signature_id=accepted.signature_id,
        method=_METHOD_NAMES.get(accepted.method, ""),
        country=accepted.country,
        territory=accepted.territory,
        signed_at=accepted.signed_at.ToNanoseconds() / 1e9,
        ip_hash=accepted.ip_hash,
        offset=offset,
    )


def invalidation_row(shard: int, invalidated: events_pb2.SignatureInvalidated) -> InvalidationRow:
    return InvalidationRow(
        invalidated.petition_id,
        shard,
        invalidated.signer,
        invalidated.reason,
        invalidated.invalidated_at.ToNanoseconds() / 1e9 or time.time(),
    )


def counted_event(offset: int, event: events_pb2.SignatureEvent) -> CountedEvent:
    """What the counters' script applies for the event."""
    if event.HasField("accepted"):
        a = event.accepted
        return CountedEvent(offset, ACCEPT, a.petition_id, a.signer, a.territory, a.country)
    return CountedEvent(offset, INVALIDATE, event.invalidated.petition_id, event.invalidated.signer, "", "")
