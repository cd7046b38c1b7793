"""The consume loop: take a batch per partition, apply it, commit it.

Offsets are committed only after a batch is fully applied. A failure (a
store unreachable) rewinds the partition to the batch's start and retries
with backoff; the counters' applied offsets make the retry exact.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from cassandra import DriverException
from redis.exceptions import RedisError

from services.tally.applier import BatchApplier, LogMessage
from services.tally.metric_defs import BATCH_FAILURES

log = structlog.get_logger()

MAX_BACKOFF_SECONDS = 5.0


class SignatureConsumer:
    def __init__(self, consumer: AIOKafkaConsumer, applier: BatchApplier, max_batch: int, poll_timeout_ms: int):
        self._consumer = consumer
        self._applier = applier
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._backoff = 0.1

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_batch)
            for partition, records in batches.items():
                if records:
                    await self._apply_and_commit(partition, records)

    async def _apply_and_commit(self, partition: TopicPartition, records: list[object]) -> None:
        messages = [
            LogMessage(r.topic, r.partition, r.offset, r.key, r.value)  # type: ignore[attr-defined]
            for r in records
        ]
        try:
            await self._applier.apply(partition.partition, messages)
        except (RedisError, DriverException, KafkaError, OSError) as error:
            BATCH_FAILURES.labels(type(error).__name__).inc()
            log.error(
                "batch failed; retrying",
                partition=partition.partition,
                first_offset=messages[0].offset,
                error=repr(error),
                backoff_seconds=self._backoff,
            )
            self._consumer.seek(partition, messages[0].offset)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
            return
        self._backoff = 0.1
        try:
            await self._consumer.commit({partition: messages[-1].offset + 1})
        except CommitFailedError as error:
            # The partition moved to another consumer during the batch; it
            # will replay from the last commit and skip what we applied.
            log.warning("commit failed after rebalance", partition=partition.partition, error=str(error))
