"""Decode: each message becomes a SignatureEvent with the fields every
signature needs, or the reason it cannot be one (for the dead-letter step)."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from petitions.v1 import events_pb2
from services.tally.steps.protocol import Batch, Forward, LogMessage


class Malformed(Exception):
    pass


def decode(message: LogMessage) -> events_pb2.SignatureEvent:
    if message.value is None:
        raise Malformed("empty message value")
    event = events_pb2.SignatureEvent()
    try:
        event.ParseFromString(message.value)
    except DecodeError as error:
        raise Malformed(f"not a SignatureEvent: {error}") from None
    kind = event.WhichOneof("event")
    if kind == "accepted":
        if not event.accepted.petition_id or not event.accepted.signer or not event.accepted.signature_id:
            raise Malformed("accepted signature without petition_id, signer or signature_id")
    elif kind == "invalidated":
        if not event.invalidated.petition_id or not event.invalidated.signer:
            raise Malformed("invalidation without petition_id or signer")
    else:
        raise Malformed("SignatureEvent carries no known event")
    return event


class Decode(Forward):
    async def submit(self, batch: Batch) -> None:
        for message in batch.messages:
            try:
                batch.decoded.append((message, decode(message)))
            except Malformed as error:
                batch.decoded.append((message, str(error)))
        await self.next_step.submit(batch)
