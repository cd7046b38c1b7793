"""Identity's public keys, kept fresh for offline credential checks, by any
service that checks signer credentials (signing on every Sign, the gateway
before it shows a sign-in).

Keys are fetched from Identity.GetVerificationKeys, kept as long as identity
says (it activates a new key only after that long, so honouring it exactly
means never meeting an unknown key), and fetched again at once, at most every
few seconds, when a credential names a key id the cache does not hold: how a
key rotation reaches a service without a restart. Keys already held stay
good through an identity outage: they signed the credentials in use now.

How the keys are fetched, and what "identity cannot be asked" looks like,
belong to the caller (a gRPC channel of its own, or the gateway's pool of
backend channels): it passes the fetch and the exception that fetch raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from petitions.v1 import identity_pb2
from servicekit.signer_credential import CredentialVerifier, UnknownKeyId, VerifiedCredential

MIN_REFETCH_INTERVAL_SECONDS = 5.0

Unavailable = TypeVar("Unavailable", bound=Exception)
Verified = TypeVar("Verified")


class CredentialKeyCache(Generic[Unavailable]):
    def __init__(self, fetch: Callable[[], Awaitable[identity_pb2.VerificationKeys]], unavailable: type[Unavailable]):
        self._fetch = fetch
        self._unavailable = unavailable
        self._verifier = CredentialVerifier()
        self._fresh_until = 0.0
        self._last_fetch = -MIN_REFETCH_INTERVAL_SECONDS
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Fetches the keys now; raises the fetch's `unavailable` error."""
        requested = time.monotonic()
        async with self._lock:
            if self._last_fetch >= requested:
                return  # another task fetched while this one waited for the lock
            self._last_fetch = time.monotonic()
            try:
                keys = await self._fetch()
            except self._unavailable:
                # Not again before the minimum interval, or every request
                # would wait on a dead identity service.
                self._fresh_until = self._last_fetch + MIN_REFETCH_INTERVAL_SECONDS
                raise
            self._verifier.replace_keys(keys.jwks_json)
            self._fresh_until = self._last_fetch + max(keys.cache_seconds, 1)

    async def verify(self, token: str) -> VerifiedCredential:
        """Verifies a signer credential; raises CredentialRejected (forged,
        expired, malformed, unknown key), or the `unavailable` error when no
        key could be had at all."""
        return await self.verify_with(CredentialVerifier.verify, token)

    async def verify_with(self, check: Callable[[CredentialVerifier, str], Verified], token: str) -> Verified:
        """Verifies any credential identity issues with `check` (e.g.
        servicekit.role_credentials.verify_staff), with the same key
        freshness and refetch-on-unknown-key rules."""
        if time.monotonic() >= self._fresh_until:
            await self._refresh_tolerating_outage()
        try:
            return check(self._verifier, token)
        except UnknownKeyId:
            if time.monotonic() - self._last_fetch < MIN_REFETCH_INTERVAL_SECONDS:
                raise
            await self._refresh_tolerating_outage()
            return check(self._verifier, token)

    async def _refresh_tolerating_outage(self) -> None:
        try:
            await self.refresh()
        except self._unavailable:
            if not self._verifier.key_ids:
                raise
