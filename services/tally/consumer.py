"""The consume loop: poll → submit → commit, over the chain of steps in
services/tally/steps (chain.py says what happens to a batch).

Each poll's records become one batch per partition, submitted to the
chain; a partition whose previous batch is still in flight is refused
(MessageRejected) and the loop rewinds and pauses it until the chain
resumes it, so back-pressure never needs a queue. Offsets are committed
only for batches that went through every step.

On stop (SIGTERM) and when the group takes partitions away, the chain is
joined: batches in flight finish and are committed within drain_seconds,
and only then does the consumer leave the group, so the next owner does not
replay them (it would change nothing, but it is work and, for a batch cut
in the middle, rests on replay alone).
"""

from __future__ import annotations

import contextlib
import time

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from services.tally.metric_defs import CONSUMER_LAG, LAG_SECONDS
from services.tally.steps.commit import Progress
from services.tally.steps.in_flight import InFlight
from services.tally.steps.protocol import Batch, LogMessage, MessageRejected

log = structlog.get_logger()

Records = dict[TopicPartition, list[object]]


class SignatureConsumer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        chain: InFlight,
        progress: Progress,
        max_batch: int,
        poll_timeout_ms: int,
        linger_ms: int,
    ):
        self._consumer = consumer
        self._chain = chain
        self._progress = progress
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._linger_ms = linger_ms
        self._lag_labels: set[str] = set()

    async def run(self) -> None:
        while True:
            # While batches are in flight, take only what is already fetched
            # and wait for a batch to finish instead (below).
            batches = await self._take(0 if self._chain.busy else self._poll_timeout_ms)
            for partition, records in batches.items():
                if records:
                    await self._submit(partition, records)
            waiting = not any(batches.values())
            await self._chain.poll(self._poll_timeout_ms / 1000 if waiting else 0.0)
            await self._report_lag()

    async def drain(self, within_seconds: float) -> None:
        """Finishes and commits the batches in flight, within within_seconds
        seconds; nothing is submitted afterwards."""
        await self._chain.close()
        await self._chain.join(within_seconds)

    async def _submit(self, partition: TopicPartition, records: list[object]) -> None:
        batch = Batch(
            partition,
            [
                LogMessage(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)  # type: ignore[attr-defined]
                for r in records
            ],
        )
        try:
            await self._chain.submit(batch)
        except MessageRejected:
            # Taken again from its first offset once the chain resumes the
            # partition; a revoked partition is its next owner's.
            with contextlib.suppress(IllegalStateError):
                self._consumer.seek(partition, batch.first_offset)
                self._consumer.pause(partition)

    async def _take(self, timeout_ms: int) -> Records:
        """Up to max_batch records; when fewer came, waits up to linger_ms
        for more, trading a little latency for fewer, larger batches."""
        batches: Records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_batch)
        taken = sum(len(records) for records in batches.values())
        if self._linger_ms and 0 < taken < self._max_batch:
            more: Records = await self._consumer.getmany(
                timeout_ms=self._linger_ms, max_records=self._max_batch - taken
            )
            for tp, records in more.items():
                batches[tp] = [*batches.get(tp, []), *records]
        return batches

    async def _report_lag(self) -> None:
        """Messages behind the log's end per partition, and in seconds the
        age of the last applied message where more are waiting."""
        now_ms = time.time() * 1000
        behind_seconds = 0.0
        labels = set()
        assigned = self._consumer.assignment()
        # A partition that comes back later may have moved on elsewhere.
        for tp in self._progress.keys() - assigned:
            del self._progress[tp]
        for tp in assigned:
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                next_offset, last_timestamp = self._progress.get(tp) or (await self._consumer.position(tp), None)
            except IllegalStateError:
                continue  # revoked meanwhile
            lag = max(0, highwater - next_offset)
            CONSUMER_LAG.labels(str(tp.partition)).set(lag)
            labels.add(str(tp.partition))
            if lag and last_timestamp is not None:
                behind_seconds = max(behind_seconds, (now_ms - last_timestamp) / 1000)
        # Partitions that moved to another worker are that worker's to report.
        for gone in self._lag_labels - labels:
            CONSUMER_LAG.remove(gone)
        self._lag_labels = labels
        LAG_SECONDS.set(behind_seconds)


class DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move to another member, the batches in flight are
    finished and committed (within the drain bound), so their new owner
    starts after them."""

    def __init__(self, chain: InFlight, drain_seconds: float):
        self._chain = chain
        self._drain_seconds = drain_seconds

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            await self._chain.join(self._drain_seconds)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass
