"""Count: the batch applied to the partition's shard of the counters in
Redis by one Lua script, which skips offsets the shard already applied and
stores the new applied offset, so a replayed batch changes nothing.

When the script finds the shard's applied offset behind the batch (Redis
lost its state), the shard is rebuilt from Cassandra first; every message
before the batch is on record there, since archive comes before count and
offsets are committed after."""

from __future__ import annotations

from services.tally.counters import ShardedCounters, ShardStateLost
from services.tally.metric_defs import DUPLICATES_DROPPED
from services.tally.recovery import ShardRecovery
from services.tally.steps.protocol import Batch, Forward, Step


class Count(Forward):
    def __init__(self, counters: ShardedCounters, recovery: ShardRecovery, next_step: Step):
        super().__init__(next_step)
        self._counters = counters
        self._recovery = recovery

    async def submit(self, batch: Batch) -> None:
        partition, first, last = batch.partition.partition, batch.first_offset, batch.last_offset
        try:
            applied = await self._counters.apply(partition, first, last, batch.counted)
        except ShardStateLost:
            await self._recovery.rebuild(partition, first)
            applied = await self._counters.apply(partition, first, last, batch.counted)
        DUPLICATES_DROPPED.inc(applied.duplicates)
        await self.next_step.submit(batch)
