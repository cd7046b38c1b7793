"""Identity's public keys, so the gateway tells a page it is signed in only
for a credential identity really issued.

Signing checks every credential it is asked to sign with; the gateway
checks the one it shows (GET /api/v1/session), or a forged cookie would
display as signed in with whatever it claims. The keys come from
Identity.GetVerificationKeys through the gateway's identity backend, cached
as long as identity says, and fetched again (at most every few seconds) when
a credential names a key the cache does not hold: how a key rotation reaches
the gateway without a restart. The rules are signing's
(services/signing/credential_keys.py), over the gateway's pool of channels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from petitions.v1 import identity_pb2
from servicekit.signer_credential import CredentialVerifier, UnknownKeyId, VerifiedCredential
from services.gateway.backends import Backend
from services.gateway.http_errors import ApiError

if TYPE_CHECKING:
    from petitions.v1.identity_pb2_grpc import IdentityAsyncStub

MIN_REFETCH_INTERVAL_SECONDS = 5.0


class CredentialKeys:
    def __init__(self, identity: Backend[IdentityAsyncStub], timeout_seconds: float):
        self._identity = identity
        self._timeout = timeout_seconds
        self._verifier = CredentialVerifier()
        self._fresh_until = 0.0
        self._last_fetch = -MIN_REFETCH_INTERVAL_SECONDS
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> VerifiedCredential:
        """The credential's claims, checked against identity's keys. Raises
        CredentialRejected (forged, expired, malformed, unknown key), or the
        identity backend's ApiError when no key could be had at all."""
        if time.monotonic() >= self._fresh_until:
            await self._refresh_tolerating_outage()
        try:
            return self._verifier.verify(token)
        except UnknownKeyId:
            if time.monotonic() - self._last_fetch < MIN_REFETCH_INTERVAL_SECONDS:
                raise
            await self._refresh_tolerating_outage()
            return self._verifier.verify(token)

    async def _refresh_tolerating_outage(self) -> None:
        # Keys already held stay good through an identity outage: they are
        # the ones that signed the credentials in browsers now.
        try:
            await self._refresh()
        except ApiError:
            if not self._verifier.key_ids:
                raise

    async def _refresh(self) -> None:
        requested = time.monotonic()
        async with self._lock:
            if self._last_fetch >= requested:
                return  # fetched by another request while this one waited
            self._last_fetch = time.monotonic()

            def fetch(stub: IdentityAsyncStub) -> Awaitable[identity_pb2.VerificationKeys]:
                return stub.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=self._timeout)

            try:
                keys = await self._identity.call(fetch)
            except ApiError:
                # Not again before the interval, or every page load would
                # wait on an identity service that is down.
                self._fresh_until = self._last_fetch + MIN_REFETCH_INTERVAL_SECONDS
                raise
            self._verifier.replace_keys(keys.jwks_json)
            self._fresh_until = self._last_fetch + max(keys.cache_seconds, 1)
