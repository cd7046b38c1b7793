"""In flight: the head of the chain. Each partition's batch runs through the
rest of the chain as a task of its own, so one partition's Cassandra round
trips overlap another's (their state in Redis is disjoint: each partition
owns its shard). One batch per partition at a time: a second one is
refused with MessageRejected, and the consume loop pauses the partition
until its batch is done; nothing queues.

A batch that fails on a store (unreachable, timed out) rewinds its
partition to the batch's first offset after a backoff of its own; the
counters' applied offsets make the retry exact. Any other error (too many
dead letters) is fatal: poll raises it and the worker stops."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from cassandra import DriverException
from redis.exceptions import RedisError

from services.tally.metric_defs import BATCH_FAILURES
from services.tally.steps.protocol import Batch, MessageRejected, Step

log = structlog.get_logger()

MAX_BACKOFF_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.1
STORE_ERRORS = (RedisError, DriverException, KafkaError, OSError)


class InFlight:
    def __init__(self, consumer: AIOKafkaConsumer, next_step: Step):
        self._consumer = consumer
        self.next_step = next_step
        # A task's result: None when the batch went through, else the offset
        # to rewind its partition to.
        self._tasks: dict[TopicPartition, asyncio.Task[int | None]] = {}
        self._backoff: dict[TopicPartition, float] = {}
        self._fatal: BaseException | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def submit(self, batch: Batch) -> None:
        if self._closed:
            raise MessageRejected("the chain is closed")
        if batch.partition in self._tasks:
            raise MessageRejected(f"partition {batch.partition.partition} has a batch in flight")
        self._tasks[batch.partition] = asyncio.create_task(
            self._run(batch), name=f"apply-partition-{batch.partition.partition}"
        )

    async def _run(self, batch: Batch) -> int | None:
        try:
            await self.next_step.submit(batch)
        except STORE_ERRORS as error:
            backoff = self._backoff.get(batch.partition, FIRST_BACKOFF_SECONDS)
            BATCH_FAILURES.labels(type(error).__name__).inc()
            log.error(
                "batch failed; retrying",
                partition=batch.partition.partition,
                first_offset=batch.first_offset,
                error=repr(error),
                backoff_seconds=backoff,
            )
            await asyncio.sleep(backoff)
            self._backoff[batch.partition] = min(backoff * 2, MAX_BACKOFF_SECONDS)
            return batch.first_offset
        self._backoff.pop(batch.partition, None)
        return None

    async def poll(self, wait_seconds: float = 0.0) -> None:
        """Reaps finished batches, first waiting up to wait_seconds for one
        when none is; commits them; raises a fatal error of any."""
        if wait_seconds and self._tasks and not any(task.done() for task in self._tasks.values()):
            await asyncio.wait(self._tasks.values(), timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED)
        self._reap()
        await self.next_step.poll()
        if self._fatal is not None:
            raise self._fatal

    async def join(self, within_seconds: float | None) -> None:
        """Lets the batches in flight finish (within within_seconds), commits them.
        A fatal error is not raised here: join runs when the worker stops
        or gives partitions away, and poll has raised it (or will)."""
        pending = list(self._tasks.values())
        if pending:
            _, unfinished = await asyncio.wait(pending, timeout=within_seconds)
            for task in unfinished:
                log.warning("batch not finished within the drain; its next owner replays it", task=task.get_name())
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        self._reap()
        await self.next_step.join(within_seconds)

    async def close(self) -> None:
        self._closed = True
        await self.next_step.close()

    def _reap(self) -> None:
        for partition, task in list(self._tasks.items()):
            if not task.done():
                continue
            del self._tasks[partition]
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                self._fatal = self._fatal or error
                continue
            rewind = task.result()
            # A partition revoked meanwhile has nothing to rewind: its next
            # owner replays from the last commit.
            with contextlib.suppress(IllegalStateError):
                if rewind is not None:
                    self._consumer.seek(partition, rewind)
        # A partition paused while its batch was in flight takes batches again.
        free = self._consumer.paused() - set(self._tasks)
        if free:
            self._consumer.resume(*free)
