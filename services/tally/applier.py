"""Applies one partition's batch of signature events: archive in Cassandra,
then count in Redis. Only after both may the consumer commit the offsets.

A message that cannot be decoded, or lacks the fields every signature needs,
goes to the dead-letter topic with the reason; it never stops the partition.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from google.protobuf.message import DecodeError

from petitions.v1 import events_pb2, identity_pb2
from services.tally.archive import InvalidationRow, SignatureArchive, SignatureRow
from services.tally.counters import ACCEPT, INVALIDATE, CountedEvent, ShardedCounters, ShardStateLost
from services.tally.dead_letters import DeadLetterSink
from services.tally.metric_defs import APPLIED, BATCH_MESSAGES, BATCH_SECONDS, DUPLICATES_DROPPED
from services.tally.recovery import ShardRecovery
from services.tally.thresholds import ThresholdWatcher

log = structlog.get_logger()

_METHOD_NAMES = {
    identity_pb2.VERIFICATION_METHOD_OIDC: "oidc",
    identity_pb2.VERIFICATION_METHOD_EMAIL: "email",
}


@dataclass(frozen=True)
class LogMessage:
    """What the applier needs of a Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


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


class TooManyDeadLetters(Exception):
    """So many undecodable messages in a row that the fault is more likely
    ours (a bad deploy, a wrong topic) than the messages'."""


class BatchApplier:
    def __init__(
        self,
        archive: SignatureArchive,
        counters: ShardedCounters,
        dead_letters: DeadLetterSink,
        thresholds: ThresholdWatcher,
        recovery: ShardRecovery,
        max_dead_letters_in_row: int,
    ):
        self._archive = archive
        self._counters = counters
        self._dead_letters = dead_letters
        self._thresholds = thresholds
        self._recovery = recovery
        self._max_dead_letters_in_row = max_dead_letters_in_row
        self._dead_letters_in_row = 0

    async def apply(self, partition: int, messages: Sequence[LogMessage]) -> None:
        started = time.perf_counter()
        rows: list[SignatureRow] = []
        counted: list[CountedEvent] = []
        invalidations: list[InvalidationRow] = []
        for message in messages:
            try:
                event = decode(message)
            except Malformed as error:
                self._dead_letters_in_row += 1
                if self._dead_letters_in_row > self._max_dead_letters_in_row:
                    # Stop rather than dead-letter the whole log: nothing of
                    # this batch is committed, so a fixed deploy resumes here.
                    raise TooManyDeadLetters(
                        f"{self._dead_letters_in_row} messages in a row could not be applied;"
                        f" stopped at partition {message.partition} offset {message.offset}: {error}"
                    ) from None
                await self._dead_letter(message, str(error))
                continue
            self._dead_letters_in_row = 0
            if event.HasField("accepted"):
                accepted = event.accepted
                rows.append(
                    SignatureRow(
                        petition_id=accepted.petition_id,
                        shard=partition,
                        signer=accepted.signer,
                        signature_id=accepted.signature_id,
                        method=_METHOD_NAMES.get(accepted.method, ""),
                        country=accepted.country,
                        territory=accepted.territory,
                        signed_at=accepted.signed_at.ToNanoseconds() / 1e9,
                        ip_hash=accepted.ip_hash,
                        offset=message.offset,
                    )
                )
                counted.append(
                    CountedEvent(
                        message.offset,
                        ACCEPT,
                        accepted.petition_id,
                        accepted.signer,
                        accepted.territory,
                        accepted.country,
                    )
                )
            else:
                invalidated = event.invalidated
                invalidations.append(
                    InvalidationRow(
                        invalidated.petition_id,
                        partition,
                        invalidated.signer,
                        invalidated.reason,
                        invalidated.invalidated_at.ToNanoseconds() / 1e9 or time.time(),
                    )
                )
                counted.append(
                    CountedEvent(message.offset, INVALIDATE, invalidated.petition_id, invalidated.signer, "", "")
                )
        # Cassandra first: a signature is counted only once it is on record.
        await self._archive.store(rows, invalidations)
        first, last = messages[0].offset, messages[-1].offset
        try:
            applied = await self._counters.apply(partition, first, last, counted)
        except ShardStateLost:
            await self._recovery.rebuild(partition, first)
            applied = await self._counters.apply(partition, first, last, counted)
        DUPLICATES_DROPPED.inc(applied.duplicates)
        # Also after a replayed batch whose counts were applied before a
        # crash: the check reads the counters, so it cannot miss a crossing.
        await self._thresholds.check({row.petition_id for row in rows})
        for item in counted:
            APPLIED.labels("accepted" if item.kind == ACCEPT else "invalidated").inc()
        BATCH_SECONDS.observe(time.perf_counter() - started)
        BATCH_MESSAGES.observe(len(messages))

    async def _dead_letter(self, message: LogMessage, reason: str) -> None:
        await self._dead_letters.send(
            message.topic, message.partition, message.offset, message.key, message.value, reason
        )
        log.warning("dead-lettered", partition=message.partition, offset=message.offset, reason=reason)
