"""What every step of the consumer chain is, and what flows through it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import TopicPartition

from petitions.v1 import events_pb2
from services.tally.counters import CountedEvent


class MessageRejected(Exception):
    """A step is full: the caller keeps the batch and offers it again
    later (the consume loop rewinds and pauses the partition), so that no
    step ever needs an unbounded queue."""


@dataclass(frozen=True)
class LogMessage:
    """What the chain needs of a Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # The producer's timestamp (ms), for the lag metrics.
    timestamp: int = 0


@dataclass
class Batch:
    """One partition's messages from one poll, and what the steps learnt of
    them so far; each step fills in its part for the next ones."""

    partition: TopicPartition
    messages: Sequence[LogMessage]
    started: float = field(default_factory=time.perf_counter)
    # By decode: each message with its event, or why it is not one.
    decoded: list[tuple[LogMessage, events_pb2.SignatureEvent | str]] = field(default_factory=list)
    # By dead-letter: the messages that are signature events, in log order.
    events: list[tuple[LogMessage, events_pb2.SignatureEvent]] = field(default_factory=list)
    # By archive: what the counters apply, and the petitions that gained signatures.
    counted: list[CountedEvent] = field(default_factory=list)
    signed_petitions: set[str] = field(default_factory=set)

    @property
    def first_offset(self) -> int:
        return self.messages[0].offset

    @property
    def last_offset(self) -> int:
        return self.messages[-1].offset


class Step(Protocol):
    async def submit(self, batch: Batch) -> None:
        """Does this step's job on the batch and passes it on; raises
        MessageRejected when the step cannot take it now."""
        ...

    async def poll(self) -> None:
        """Moves on work that is ready (finished batches, their commits);
        never waits for work in flight."""
        ...

    async def join(self, within_seconds: float | None) -> None:
        """Finishes the work in flight, waiting at most within_seconds,
        and moves it on (commits it); what is not finished by then is
        abandoned, for the partition's next owner to replay."""
        ...

    async def close(self) -> None:
        """No batch will be submitted any more."""
        ...


class Forward:
    """A step that does its work inside submit and has nothing of its own
    to poll, join or close: it passes those on to the next step."""

    def __init__(self, next_step: Step):
        self.next_step = next_step

    async def submit(self, batch: Batch) -> None:
        await self.next_step.submit(batch)

    async def poll(self) -> None:
        await self.next_step.poll()

    async def join(self, within_seconds: float | None) -> None:
        await self.next_step.join(within_seconds)

    async def close(self) -> None:
        await self.next_step.close()
