"""Publishes signature events and waits for Kafka's acknowledgement."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from petitions.v1 import events_pb2
from servicekit.stores import ReplaceableProducer


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
        self._in_flight += 1
        try:
            metadata = await asyncio.wait_for(
                self._producer.send_and_wait(self._topic, event.SerializeToString(), key=key), self._timeout
            )
        except TimeoutError:
            raise PublishFailed(f"Kafka did not acknowledge within {self._timeout:g} s") from None
        except KafkaError as error:
            raise PublishFailed(f"Kafka refused the signature: {error!r}") from None
        finally:
            self._in_flight -= 1
        return LogPosition(metadata.topic, metadata.partition, metadata.offset)
