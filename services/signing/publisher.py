"""Publishes signature events and waits for Kafka's acknowledgement."""

from __future__ import annotations

import asyncio
import hashlib
import math
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


# How often, per stall period, the stall watch looks: a send gives up between
# stall_seconds and 1.1 x stall_seconds after Kafka went silent.
STALL_CHECKS = 10


def signature_key(petition_id: str, signer: str) -> bytes:
    """Every event of one person on one petition goes to one partition, in
    order; different people on one petition spread over all partitions."""
    return hashlib.sha256(f"{petition_id}\x00{signer}".encode()).digest()


@dataclass(eq=False)
class _Wait:
    """One send waiting for its acknowledgement (compared by identity)."""

    began: float
    deadline: asyncio.Timeout
    cut: bool = False


class SignaturePublisher:
    """Sends signature events, each waiting for Kafka's acknowledgement at
    most `timeout_seconds`, and less when Kafka has stopped answering: once
    nothing at all has been acknowledged for `stall_seconds`, every send that
    has waited that long gives up (UNAVAILABLE at once rather than at the
    full timeout, which is as long as a client's own deadline). A slow but
    working broker keeps acknowledging something, so its sends keep waiting."""

    def __init__(
        self,
        producer: ReplaceableProducer,
        topic: str,
        timeout_seconds: float,
        max_in_flight: int,
        stall_seconds: float | None = None,
    ):
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_seconds
        self._stall = min(timeout_seconds, stall_seconds if stall_seconds is not None else timeout_seconds)
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._waits: set[_Wait] = set()
        # Loop time of the latest acknowledgement of any send.
        self._last_ack = -math.inf
        self._watch: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def publish(self, key: bytes, event: events_pb2.SignatureEvent) -> LogPosition:
        if self._in_flight >= self._max_in_flight:
            raise Overloaded(f"{self._in_flight} signatures already await Kafka's acknowledgement")
        SENDS_AWAITING_ACK.observe(self._in_flight)
        self._in_flight += 1
        PUBLISHES_IN_FLIGHT.inc()
        loop = asyncio.get_running_loop()
        sent = time.perf_counter()
        # asyncio.timeout, unlike wait_for, costs no extra task per send; the
        # stall watch brings its deadline forward when Kafka goes silent.
        deadline = asyncio.timeout(self._timeout)
        wait = _Wait(loop.time(), deadline)
        try:
            async with deadline:
                self._waits.add(wait)
                self._watch_for_stall(loop)
                metadata = await self._producer.send_and_wait(self._topic, event.SerializeToString(), key=key)
        except TimeoutError:
            if wait.cut:
                PUBLISH_FAILURES.labels("stalled").inc()
                raise PublishFailed(f"Kafka has acknowledged nothing for {self._stall:g} s") from None
            PUBLISH_FAILURES.labels("timeout").inc()
            raise PublishFailed(f"Kafka did not acknowledge within {self._timeout:g} s") from None
        except KafkaError as error:
            PUBLISH_FAILURES.labels("refused").inc()
            raise PublishFailed(f"Kafka refused the signature: {error!r}") from None
        finally:
            self._waits.discard(wait)
            self._in_flight -= 1
            PUBLISHES_IN_FLIGHT.dec()
        self._last_ack = loop.time()
        PUBLISH_ACK_SECONDS.observe(time.perf_counter() - sent)
        return LogPosition(metadata.topic, metadata.partition, metadata.offset)

    def _watch_for_stall(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer per publisher, running only while sends wait: a healthy
        broker costs a comparison every tick, whatever the rate of sends."""
        if self._watch is None and self._stall < self._timeout:
            self._watch = loop.call_later(self._stall / STALL_CHECKS, self._check_stall, loop)

    def _check_stall(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch = None
        if not self._waits:
            return
        now = loop.time()
        if now - self._last_ack >= self._stall:
            for wait in self._waits:
                if not wait.cut and now - wait.began >= self._stall:
                    wait.cut = True
                    wait.deadline.reschedule(now)
        self._watch_for_stall(loop)
