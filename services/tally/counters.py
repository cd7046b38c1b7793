"""The petition counters in Redis, applied exactly once per Kafka message.

Each Kafka partition owns its own shard of every petition's counters, plus
the set of signers it has counted and the last offset it applied. A batch of
one partition is applied by one Lua script, atomically: offsets at or below
the applied one are skipped, so a batch replayed after a crash or a
rebalance changes nothing. All keys of a shard share a hash tag, so the
script also runs on Redis Cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

# The totals and their rule are pure (threshold_rules.py); re-exported here
# for the counters' callers.
from services.tally.threshold_rules import Totals as Totals
from services.tally.threshold_rules import totals_of as totals_of

ACCEPT = "a"
INVALIDATE = "i"

# ARGV[1] = number of events, ARGV[2] = the batch's first offset; then five
# values per event: offset, kind, signer, territory, country. KEYS[1] is the
# shard's applied offset, then two keys per event: the petition's signer hash
# and its counter hash. A signer hash value is "territory\tcountry"; a
# leading "!" marks an invalidated signature, which never counts again.
#
# Offsets are contiguous and a batch starts where the previous one (or the
# committed offset) ended, so an applied offset below first - 1 means Redis
# lost what it had applied (a flush, or an append-only file missing its last
# writes): the script then changes nothing and answers {1, 0}, and the
# caller rebuilds the shard from Cassandra before applying the batch.
# Otherwise it answers {0, change in the count, accepted signatures of
# people already counted}.
_APPLY = """
local applied = tonumber(redis.call('GET', KEYS[1]) or '-1')
if applied < tonumber(ARGV[2]) - 1 then return {1, 0, 0} end
local last = applied
local counted = 0
local duplicates = 0
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local a = 3 + i * 5
  local offset = tonumber(ARGV[a])
  if offset > applied then
    local kind, signer, territory, country = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    local signers, counts = KEYS[2 + i * 2], KEYS[3 + i * 2]
    if kind == 'a' then
      if redis.call('HSETNX', signers, signer, territory .. '\\t' .. country) == 1 then
        redis.call('HINCRBY', counts, 'total', 1)
        if territory ~= '' then redis.call('HINCRBY', counts, 't:' .. territory, 1) end
        if country ~= '' then redis.call('HINCRBY', counts, 'c:' .. country, 1) end
        counted = counted + 1
      else
        duplicates = duplicates + 1
      end
    elseif kind == 'i' then
      local previous = redis.call('HGET', signers, signer)
      if not previous then
        redis.call('HSET', signers, signer, '!')
      elseif string.sub(previous, 1, 1) ~= '!' then
        redis.call('HSET', signers, signer, '!' .. previous)
        local tab = string.find(previous, '\\t', 1, true)
        local t, c = string.sub(previous, 1, tab - 1), string.sub(previous, tab + 1)
        redis.call('HINCRBY', counts, 'total', -1)
        if t ~= '' then redis.call('HINCRBY', counts, 't:' .. t, -1) end
        if c ~= '' then redis.call('HINCRBY', counts, 'c:' .. c, -1) end
        counted = counted - 1
      end
    end
    if offset > last then last = offset end
  end
end
if last > applied then redis.call('SET', KEYS[1], last) end
return {0, counted, duplicates}
"""

# Moves a shard's applied offset forward to ARGV[1], never back.
_ADVANCE = """
local applied = tonumber(redis.call('GET', KEYS[1]) or '-1')
if applied < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


# Replaces one (shard, petition)'s signer hash and counters with what the
# system of record says, unless the shard's applied offset moved since the
# caller read the records (a batch landed meanwhile: read again).
# KEYS = applied, signers, counts; ARGV[1] = applied offset as read ("" if
# none), ARGV[2] = number of signers, then signer/value pairs, then
# field/count pairs for the counters.
_REBUILD = """
local applied = redis.call('GET', KEYS[1]) or ''
if applied ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], ARGV[3 + i * 2], ARGV[4 + i * 2])
end
for i = 3 + n * 2, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
return 1
"""


class ShardStateLost(Exception):
    """Redis no longer holds what this shard applied before the batch."""

    def __init__(self, partition: int, first_offset: int):
        super().__init__(f"shard {partition}: state before offset {first_offset} is missing from Redis")
        self.partition = partition
        self.first_offset = first_offset


@dataclass(frozen=True)
class Applied:
    """What one batch did to the counts."""

    change: int
    duplicates: int


@dataclass(frozen=True)
class CountedEvent:
    offset: int
    kind: str
    petition_id: str
    signer: str
    territory: str
    country: str


class ShardedCounters:
    def __init__(self, redis: aioredis.Redis, topic: str):
        self._redis = redis
        self._topic = topic
        self._apply = redis.register_script(_APPLY)
        self._rebuild = redis.register_script(_REBUILD)
        self._advance = redis.register_script(_ADVANCE)

    def _shard(self, partition: int) -> str:
        return f"tally:{{{self._topic}:{partition}}}"

    async def apply(
        self, partition: int, first_offset: int, last_offset: int, events: Sequence[CountedEvent]
    ) -> Applied:
        """Applies one partition's batch.

        first_offset and last_offset bound the batch, recorded even when it
        held nothing countable (e.g. only dead letters). Raises
        ShardStateLost, changing nothing, when Redis lost the shard's state."""
        shard = self._shard(partition)
        keys = [f"{shard}:applied"]
        args: list[str | int] = [len(events) + 1, first_offset]
        for event in events:
            keys += [f"{shard}:signers:{event.petition_id}", f"{shard}:counts:{event.petition_id}"]
            args += [event.offset, event.kind, event.signer, event.territory, event.country]
        # A final no-op entry moves the applied offset to the batch's end.
        keys += [f"{shard}:signers:", f"{shard}:counts:"]
        args += [last_offset, "noop", "", "", ""]
        lost, counted, duplicates = await self._apply(keys=keys, args=args)
        if int(lost):
            raise ShardStateLost(partition, first_offset)
        return Applied(int(counted), int(duplicates))

    async def advance_applied(self, partition: int, offset: int) -> None:
        """Records offset as applied unless a later one already is."""
        await self._advance(keys=[f"{self._shard(partition)}:applied"], args=[offset])

    async def applied_marker(self, partition: int) -> str:
        """The shard's applied offset as stored ("" when none), for rebuild()."""
        value = await self._redis.get(f"{self._shard(partition)}:applied")
        return value.decode() if isinstance(value, bytes) else (value or "")

    async def rebuild(
        self, partition: int, petition_id: str, applied_as_read: str, signers: dict[str, str], counts: dict[str, int]
    ) -> bool:
        """Replaces the shard's state for one petition; False (nothing
        written) when a batch was applied since applied_as_read."""
        shard = self._shard(partition)
        args: list[str | int] = [applied_as_read, len(signers)]
        for signer, value in signers.items():
            args += [signer, value]
        for field, count in counts.items():
            args += [field, count]
        keys = [f"{shard}:applied", f"{shard}:signers:{petition_id}", f"{shard}:counts:{petition_id}"]
        return bool(int(await self._rebuild(keys=keys, args=args)))

    async def applied_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """The last applied offset of each partition (-1 when none)."""
        values = await self._redis.mget([f"{self._shard(p)}:applied" for p in partitions])
        return {p: int(v) if v is not None else -1 for p, v in zip(partitions, values, strict=True)}

    async def totals(self, petition_id: str, partitions: Sequence[int]) -> Totals:
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.hgetall(f"{self._shard(partition)}:counts:{petition_id}")
            shards = await pipe.execute()
        summed: Counter[str] = Counter()
        for shard in shards:
            summed.update({field.decode(): int(value) for field, value in shard.items()})
        return totals_of(summed)
