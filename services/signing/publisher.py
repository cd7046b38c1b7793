"""Publishes signature events and waits for Kafka's acknowledgement."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from petitions.v1 import events_pb2
from servicekit.stores import ReplaceableProducer
from services.signing.metric_defs import (
    PUBLISH_ACK_SECONDS,
    PUBLISH_FAILURES,
    PUBLISHES_IN_FLIGHT,
    SENDS_AWAITING_ACK,
)


@dataclass(frozen=True)
class LogPosition:
    topic: str
    partition: int
    offset: int


class PublishFailed(Exception):
    """Kafka did not acknowledge in time; the event may or may not be stored."""


class Overloaded(Exception):
    """Too many events are already waiting for acknowledgement."""


def signature_key(petition_id: str, signer: str) -> bytes:
    """Every event of one person on one petition goes to one partition, in
    order; different people on one petition spread over all partitions."""
    return hashlib.sha256(f"{petition_id}\x00{signer}".encode()).digest()


class SignaturePublisher:
    def __init__(self, producer: ReplaceableProducer, topic: str, timeout_seconds: float, max_in_flight: int):
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_seconds
        self._max_in_flight = max_in_flight
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def publish(self, key: bytes, event: events_pb2.SignatureEvent) -> LogPosition:
        if self._in_flight >= self._max_in_flight:
            raise Overloaded(f"{self._in_flight} signatures already await Kafka's acknowledgement")
        SENDS_AWAITING_ACK.observe(self._in_flight)
        self._in_flight += 1
        PUBLISHES_IN_FLIGHT.inc()
        sent = time.perf_counter()
        try:
            # asyncio.timeout, unlike wait_for, costs no extra task per send.
            async with asyncio.timeout(self._timeout):
                metadata = await self._producer.send_and_wait(self._topic, event.SerializeToString(), key=key)
        except TimeoutError:
            PUBLISH_FAILURES.labels("timeout").inc()
            raise PublishFailed(f"Kafka did not acknowledge within {self._timeout:g} s") from None
        except KafkaError as error:
            PUBLISH_FAILURES.labels("refused").inc()
            raise PublishFailed(f"Kafka refused the signature: {error!r}") from None
        finally:
            self._in_flight -= 1
            PUBLISHES_IN_FLIGHT.dec()
        PUBLISH_ACK_SECONDS.observe(time.perf_counter() - sent)
        return LogPosition(metadata.topic, metadata.partition, metadata.offset)
