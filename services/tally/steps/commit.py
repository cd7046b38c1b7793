"""Commit: the last step. A batch that reaches it is on record and counted;
its next offset is committed to the consumer group on the next poll (one
commit for every partition finished meanwhile) or join."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from services.tally.counters import ACCEPT
from services.tally.metric_defs import APPLIED, BATCH_MESSAGES, BATCH_SECONDS
from services.tally.steps.protocol import Batch

log = structlog.get_logger()

# Per partition: the next offset to apply and the producer timestamp (ms)
# of the last applied message, for the lag metrics.
Progress = dict[TopicPartition, tuple[int, int]]


class Commit:
    def __init__(self, consumer: AIOKafkaConsumer, progress: Progress):
        self._consumer = consumer
        self._progress = progress
        self._ready: dict[TopicPartition, int] = {}
        # One commit at a time: the consume loop's poll and a rebalance's
        # join may both commit.
        self._lock = asyncio.Lock()

    async def submit(self, batch: Batch) -> None:
        for item in batch.counted:
            APPLIED.labels("accepted" if item.kind == ACCEPT else "invalidated").inc()
        BATCH_SECONDS.observe(time.perf_counter() - batch.started)
        BATCH_MESSAGES.observe(len(batch.messages))
        self._ready[batch.partition] = batch.last_offset + 1
        self._progress[batch.partition] = (batch.last_offset + 1, batch.messages[-1].timestamp)

    async def poll(self) -> None:
        async with self._lock:
            offsets, self._ready = self._ready, {}
            try:
                await self._commit(offsets)
            except BaseException:
                # Cancelled (the worker stops) or failed: the offsets stay
                # ready for the drain's commit, unless a newer one came.
                for partition, offset in offsets.items():
                    self._ready.setdefault(partition, offset)
                raise

    async def join(self, within_seconds: float | None) -> None:
        await self.poll()

    async def close(self) -> None:
        pass

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
