"""Identity's public keys, kept fresh for offline credential checks.

Keys are fetched from Identity.GetVerificationKeys at start, refreshed when
their cache time runs out, and refetched at once (at most every few seconds)
when a credential names a key id we do not know: that is how a key rotation
reaches signing without a restart.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from petitions.v1 import identity_pb2, identity_pb2_grpc
from servicekit.signer_credential import CredentialVerifier, UnknownKeyId, VerifiedCredential

MIN_REFETCH_INTERVAL_SECONDS = 5.0


class IdentityKeysUnavailable(Exception):
    """Identity could not be asked for its keys."""


class CredentialKeyCache:
    def __init__(self, channel: grpc.aio.Channel):
        self._stub = identity_pb2_grpc.IdentityStub(channel)
        self._verifier = CredentialVerifier()
        self._fresh_until = 0.0
        self._last_fetch = -MIN_REFETCH_INTERVAL_SECONDS
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        requested = time.monotonic()
        async with self._lock:
            if self._last_fetch >= requested:
                return  # another task fetched while this one waited for the lock
            self._last_fetch = time.monotonic()
            try:
                keys = await self._stub.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=5)
            except grpc.aio.AioRpcError as error:
                # Not again before the minimum interval, or every request
                # would wait on a dead identity service.
                self._fresh_until = self._last_fetch + MIN_REFETCH_INTERVAL_SECONDS
                raise IdentityKeysUnavailable(f"identity keys: {error.code().name} {error.details()}") from None
            self._verifier.replace_keys(keys.jwks_json)
            # Identity activates a new key only after this much time, so
            # honouring it exactly means never meeting an unknown key.
            self._fresh_until = self._last_fetch + max(keys.cache_seconds, 1)

    async def verify(self, token: str) -> VerifiedCredential:
        """Verifies a credential; raises CredentialRejected (or
        IdentityKeysUnavailable when the keys cannot be had at all)."""
        now = time.monotonic()
        if now >= self._fresh_until:
            await self._refresh_tolerating_outage()
        try:
            return self._verifier.verify(token)
        except UnknownKeyId:
            if time.monotonic() - self._last_fetch < MIN_REFETCH_INTERVAL_SECONDS:
                raise
            await self._refresh_tolerating_outage()
            return self._verifier.verify(token)

    async def _refresh_tolerating_outage(self) -> None:
        # Keys we already hold stay valid through an identity outage: a
        # signing service that cannot reach identity keeps accepting
        # credentials identity issued earlier.
        try:
            await self.refresh()
        except IdentityKeysUnavailable:
            if not self._verifier.key_ids:
                raise
