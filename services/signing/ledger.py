"""Who has signed what, in Redis: the fast answer to "already signed?".

One key per (petition, signer). Before publishing, a request claims the key
with a short-lived PENDING entry (SET NX), so two concurrent requests of one
person cannot both publish; after Kafka's acknowledgement the entry becomes
the permanent receipt. If a process dies between the two, the claim expires
and the person can sign again: the tally, not this ledger, is the authority
that counts a person once, so a second publication is harmless.

A receipt lasts until its petition closes plus the idempotency window (a
retry just before the deadline still gets its first answer), so Redis
holds the receipts of open petitions only. An open-ended petition keeps
them for good. Were a receipt gone while its petition is open again, a
repeat signature would be published and answered ACCEPTED, and the tally
would still count it once.

The claim and the request's rate-limit buckets are one script, so admitting
a signature costs one Redis round trip, and every command goes through the
implicit pipeline shared by concurrent requests. (The script touches several
keys: on a Redis Cluster they would need one hash tag.)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from servicekit.rate_limits import BUCKET_FUNCTIONS, Bucket, Refusal
from servicekit.redis_pipelining import AutoPipeline

# KEYS[1] = the ledger entry; KEYS[2..] = rate-limit buckets to take one
# token from. ARGV[1] = the claim, ARGV[2] = its lifetime in seconds, then
# burst and tokens per second of each bucket in KEYS order.
# Returns {'limited', bucket number, ms until a token}, {'claimed'} or
# {'existing', entry}. A refusal changes nothing; otherwise every bucket
# loses a token, whether the claim is won or the person had already signed.
_ADMIT = (
    BUCKET_FUNCTIONS
    + """
local now = redis_now()
local tokens = {}
for i = 2, #KEYS do
  local burst, rate = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  tokens[i] = bucket_tokens(KEYS[i], burst, rate, now)
  if tokens[i] < 1 then
    return {'limited', i - 1, bucket_wait_ms(tokens[i], rate)}
  end
end
for i = 2, #KEYS do
  bucket_store(KEYS[i], tokens[i] - 1, tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]), now)
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {'claimed'}
end
local current = redis.call('GET', KEYS[1])
-- Our own claim (it carries this request's fresh signature id): the client
-- resent the script after losing the first reply.
if current == ARGV[1] then
  return {'claimed'}
end
return {'existing', current}
"""
)

# Deletes the claim only if it is still ours, so a slow request whose claim
# expired never deletes another request's claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LedgerUnavailable(Exception):
    """Redis could not be reached or answered with an error."""


class EntryState(enum.Enum):
    PENDING = "pending"
    SIGNED = "signed"


@dataclass(frozen=True)
class LedgerEntry:
    state: EntryState
    signature_id: str
    idempotency_hash: str
    signed_at: float
    topic: str = ""
    partition: int = -1
    offset: int = -1

    def encode(self) -> str:
        return "|".join(
            [
                self.state.value,
                self.signature_id,
                self.idempotency_hash,
                repr(self.signed_at),
                self.topic,
                str(self.partition),
                str(self.offset),
            ]
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> LedgerEntry:
        state, signature_id, idempotency_hash, signed_at, topic, partition, offset = (
            raw.decode() if isinstance(raw, bytes) else raw
        ).split("|")
        return cls(
            EntryState(state),
            signature_id,
            idempotency_hash,
            float(signed_at),
            topic,
            int(partition),
            int(offset),
        )


class SignerLedger:
    def __init__(self, redis: aioredis.Redis, claim_seconds: int):
        self._pipeline = AutoPipeline(redis)
        self._claim_seconds = claim_seconds
        self._admit = redis.register_script(_ADMIT)
        self._release = redis.register_script(_RELEASE)

    @staticmethod
    def key(petition_id: str, signer: str) -> str:
        return f"signed:{petition_id}:{signer}"

    async def admit(
        self, petition_id: str, signer: str, entry: LedgerEntry, buckets: Sequence[Bucket] = ()
    ) -> LedgerEntry | Refusal | None:
        """Takes a token from each bucket and claims the right to publish:
        None when claimed, the entry already there, or the Refusal of the
        first empty bucket (then nothing changed)."""
        keys = [self.key(petition_id, signer), *(bucket.key for bucket in buckets)]
        args: list[str | int | float] = [entry.encode(), self._claim_seconds]
        for bucket in buckets:
            args += [bucket.burst, bucket.per_second]
        try:
            reply = await self._pipeline.run_script(self._admit, keys, args)
        except RedisError as error:
            raise LedgerUnavailable(str(error)) from error
        verdict = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if verdict == "claimed":
            return None
        if verdict == "existing":
            return LedgerEntry.decode(reply[1])
        return Refusal(buckets[int(reply[1]) - 1].scope, int(reply[2]) / 1000.0)

    async def record(self, petition_id: str, signer: str, entry: LedgerEntry, expires_at: float | None) -> None:
        """Makes the claim the permanent receipt, kept until expires_at (a
        Unix time; None keeps it for good)."""
        expiry: tuple[str, int] | tuple[()] = ("EXAT", math.ceil(expires_at)) if expires_at is not None else ()
        try:
            await self._pipeline.execute("SET", self.key(petition_id, signer), entry.encode(), *expiry)
        except RedisError as error:
            raise LedgerUnavailable(str(error)) from error

    async def release(self, petition_id: str, signer: str, entry: LedgerEntry) -> None:
        try:
            await self._pipeline.run_script(self._release, [self.key(petition_id, signer)], [entry.encode()])
        except RedisError as error:
            raise LedgerUnavailable(str(error)) from error
