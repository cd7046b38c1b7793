"""Who has signed what, in Redis: the fast answer to "already signed?".

One key per (petition, signer). Before publishing, a request claims the key
with a short-lived PENDING entry (SET NX), so two concurrent requests of one
person cannot both publish; after Kafka's acknowledgement the entry becomes
the permanent receipt. If a process dies between the two, the claim expires
and the person can sign again: the tally, not this ledger, is the authority
that counts a person once, so a second publication is harmless.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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
        self._redis = redis
        self._claim_seconds = claim_seconds
        self._release = redis.register_script(_RELEASE)

    @staticmethod
    def key(petition_id: str, signer: str) -> str:
        return f"signed:{petition_id}:{signer}"

    async def claim(self, petition_id: str, signer: str, entry: LedgerEntry) -> LedgerEntry | None:
        """Claims the right to publish; returns None on success, else the
        entry that is already there."""
        try:
            return await self._claim(self.key(petition_id, signer), entry)
        except RedisError as error:
            raise LedgerUnavailable(str(error)) from error

    async def _claim(self, key: str, entry: LedgerEntry) -> LedgerEntry | None:
        if await self._redis.set(key, entry.encode(), nx=True, ex=self._claim_seconds):
            return None
        existing = await self._redis.get(key)
        if existing is None:
            # The other claim expired between our SET and GET; try once more.
            if await self._redis.set(key, entry.encode(), nx=True, ex=self._claim_seconds):
                return None
            existing = await self._redis.get(key)
            if existing is None:
                return entry  # pathological churn: report as in progress
        return LedgerEntry.decode(existing)

    async def record(self, petition_id: str, signer: str, entry: LedgerEntry) -> None:
        try:
            await self._redis.set(self.key(petition_id, signer), entry.encode())
        except RedisError as error:
            raise LedgerUnavailable(str(error)) from error

    async def release(self, petition_id: str, signer: str, entry: LedgerEntry) -> None:
        try:
            await self._release(keys=[self.key(petition_id, signer)], args=[entry.encode()])
        except RedisError as error:
            raise LedgerUnavailable(str(error)) from error
