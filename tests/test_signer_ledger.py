"""Signing's ledger script against the real Redis: a claim is won once, a
resend of the same claim (a reply lost on the way back) is still the
claimant's, and a refused rate limit changes nothing."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from servicekit.rate_limits import Bucket, Refusal
from services.signing.ledger import EntryState, LedgerEntry, SignerLedger


def claim() -> LedgerEntry:
    return LedgerEntry(EntryState.PENDING, uuid.uuid4().hex, "", 1.0)


async def test_a_claim_is_won_once_and_a_resend_of_it_stays_won(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    ledger = SignerLedger(client, claim_seconds=30)
    petition, signer = f"ledger-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    mine, theirs = claim(), claim()
    try:
        assert await ledger.admit(petition, signer, mine) is None
        assert await ledger.admit(petition, signer, mine) is None, "the same claim sent again is still ours"
        assert await ledger.admit(petition, signer, theirs) == mine
    finally:
        await client.delete(SignerLedger.key(petition, signer))
        await client.aclose()


async def test_an_empty_bucket_refuses_and_changes_nothing(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    ledger = SignerLedger(client, claim_seconds=30)
    petition = f"ledger-{uuid.uuid4().hex[:8]}"
    roomy = Bucket("sign_signer", f"ratelimit:test:{uuid.uuid4().hex}", 10, 1.0)
    empty = Bucket("sign_ip", f"ratelimit:test:{uuid.uuid4().hex}", 1, 1 / 3600)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        assert await ledger.admit(petition, first, claim(), [roomy, empty]) is None
        tokens_before = await client.hget(roomy.key, "tokens")

        refused = await ledger.admit(petition, second, claim(), [roomy, empty])

        assert isinstance(refused, Refusal)
        assert refused.scope == "sign_ip"
        assert refused.retry_after_seconds is not None
        assert refused.retry_after_seconds > 3000
        assert await client.exists(SignerLedger.key(petition, second)) == 0, "no claim left behind"
        assert await client.hget(roomy.key, "tokens") == tokens_before, "no token taken from the other bucket"
    finally:
        await client.delete(SignerLedger.key(petition, first), SignerLedger.key(petition, second), roomy.key, empty.key)
        await client.aclose()
