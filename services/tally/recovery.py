"""Self-repair after Redis lost a shard's state.

Cassandra is written before Redis and offsets are committed after, so every
message before a batch's first offset is on record. When the apply script
finds that Redis no longer holds what the shard applied (a flush, a restart
from an append-only file missing its last writes), the worker rebuilds the
shard of every petition from Cassandra, marks the offsets before the batch
as applied, and applies the batch: the tally heals without an operator,
and `petitions recount` stays the proof.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from services.tally.counters import ShardedCounters
from services.tally.metric_defs import SHARD_REBUILDS
from services.tally.recount import Recount

log = structlog.get_logger()

# Every petition tally knows of (its petition view): a shard is rebuilt for
# each; signatures of a petition the view does not hold are not (signing
# never accepts them).
PetitionIds = Callable[[], Awaitable[list[str]]]


class ShardRecovery:
    def __init__(self, recount: Recount, counters: ShardedCounters, petition_ids: PetitionIds):
        self._recount = recount
        self._counters = counters
        self._petition_ids = petition_ids

    async def rebuild(self, partition: int, first_offset: int) -> None:
        """Rebuilds the shard from Cassandra, then records every offset
        before first_offset as applied. Rows of offsets from first_offset on
        (already stored, not yet applied) are counted too; applying them
        afterwards finds their signers known and changes nothing."""
        started = time.perf_counter()
        petitions = await self._petition_ids()
        log.warning(
            "Redis lost this shard's tally state; rebuilding it from Cassandra",
            partition=partition,
            first_offset=first_offset,
            petitions=len(petitions),
        )
        for petition_id in petitions:
            await self._recount.repair_shard(petition_id, partition)
        await self._counters.advance_applied(partition, first_offset - 1)
        SHARD_REBUILDS.inc()
        log.warning("shard rebuilt", partition=partition, seconds=round(time.perf_counter() - started, 3))
