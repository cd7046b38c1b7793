"""The dead-letter topic: where a message that can never be applied goes,
with the reason, so that the partition moves on and a person can look."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2
from servicekit.stores import ReplaceableProducer
from services.tally.metric_defs import DEAD_LETTERED


class DeadLetterSink:
    def __init__(self, producer: ReplaceableProducer, topic: str):
        self._producer = producer
        self._topic = topic

    async def send(
        self, source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, reason: str
    ) -> None:
        """Returns once Kafka acknowledged the dead letter; only then may the
        source offset be committed."""
        now = Timestamp()
        now.GetCurrentTime()
        letter = events_pb2.DeadLetter(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key or b"",
            value=value or b"",
            reason=reason,
            dead_lettered_at=now,
        )
        await self._producer.send_and_wait(self._topic, letter.SerializeToString(), key=key)
        DEAD_LETTERED.inc()
