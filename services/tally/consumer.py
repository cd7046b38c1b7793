"""The consume loop: take a batch per partition, apply it, commit it.

The partitions of one poll are applied concurrently (their state in Redis
is disjoint: each partition owns its shard), so one partition's Cassandra
round trips overlap another's. Offsets are committed only for batches fully
applied. A failure (a store unreachable) rewinds that partition to the
batch's start and retries with backoff; the counters' applied offsets make
the retry exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from cassandra import DriverException
from redis.exceptions import RedisError

from services.tally.applier import BatchApplier, LogMessage
from services.tally.metric_defs import BATCH_FAILURES, CONSUMER_LAG, LAG_SECONDS

log = structlog.get_logger()

MAX_BACKOFF_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.1

Records = dict[TopicPartition, list[object]]


class SignatureConsumer:
    def __init__(
        self, consumer: AIOKafkaConsumer, applier: BatchApplier, max_batch: int, poll_timeout_ms: int, linger_ms: int
    ):
        self._consumer = consumer
        self._applier = applier
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._linger_ms = linger_ms
        self._backoff = FIRST_BACKOFF_SECONDS
        # Per partition: the next offset to apply and the producer timestamp
        # (ms) of the last applied message, for the lag metrics.
        self._progress: dict[TopicPartition, tuple[int, int]] = {}
        self._lag_labels: set[str] = set()

    async def run(self) -> None:
        while True:
            batches = await self._take()
            # A task group, so that an error no apply handles (e.g. too many
            # dead letters) cancels the partitions' other applies with it.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._apply(tp, records)) for tp, records in batches.items() if records]
            results = [task.result() for task in tasks]
            applied = {tp: next_offset for tp, next_offset in results if next_offset is not None}
            if applied:
                await self._commit(applied)
            for tp, records in batches.items():
                if tp in applied and records:
                    self._progress[tp] = (applied[tp], records[-1].timestamp)  # type: ignore[attr-defined]
            await self._report_lag()
            if len(applied) < len(results):
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
            else:
                self._backoff = FIRST_BACKOFF_SECONDS

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

    async def _take(self) -> Records:
        """Up to max_batch records; when fewer came, waits up to linger_ms
        for more, trading a little latency for fewer, larger batches."""
        batches: Records = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_batch)
        taken = sum(len(records) for records in batches.values())
        if self._linger_ms and 0 < taken < self._max_batch:
            more: Records = await self._consumer.getmany(
                timeout_ms=self._linger_ms, max_records=self._max_batch - taken
            )
            for tp, records in more.items():
                batches[tp] = [*batches.get(tp, []), *records]
        return batches

    async def _apply(self, partition: TopicPartition, records: Sequence[object]) -> tuple[TopicPartition, int | None]:
        """Applies one partition's batch; returns the offset to commit, or
        None when it failed and the partition was rewound for a retry."""
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
            # If the partition was revoked meanwhile, its next owner
            # replays from the last commit; there is nothing to rewind.
            with contextlib.suppress(IllegalStateError):
                self._consumer.seek(partition, messages[0].offset)
            return partition, None
        return partition, messages[-1].offset + 1

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        # Partitions revoked while their batch was applied are committed by
        # nobody: their next owner replays them and the applied offsets make
        # the replay change nothing.
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another consumer during the batch; it
            # will replay from the last commit and skip what we applied.
            log.warning(
                "commit failed after rebalance", partitions=sorted(tp.partition for tp in offsets), error=str(error)
            )
