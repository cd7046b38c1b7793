"""Identity's public keys, so the gateway tells a page it is signed in only
for a credential identity really issued.

Signing checks every credential it is asked to sign with; the gateway
checks the one it shows (GET /api/v1/session), or a forged cookie would
display as signed in with whatever it claims. The keys come from
Identity.GetVerificationKeys through the gateway's identity backend (its
pool of channels), kept by the shared cache (servicekit.credential_keys);
identity out of reach is the backend's ApiError (a 503 or 504).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from petitions.v1 import identity_pb2
from servicekit.credential_keys import CredentialKeyCache
from services.gateway.backends import Backend
from services.gateway.http_errors import ApiError

if TYPE_CHECKING:
    from petitions.v1.identity_pb2_grpc import IdentityAsyncStub

CredentialKeys = CredentialKeyCache[ApiError]


def identity_keys(identity: Backend[IdentityAsyncStub], timeout_seconds: float) -> CredentialKeys:
    def get(stub: IdentityAsyncStub) -> Awaitable[identity_pb2.VerificationKeys]:
        return stub.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=timeout_seconds)

    async def fetch() -> identity_pb2.VerificationKeys:
        return await identity.call(get)

    return CredentialKeyCache(fetch, ApiError)
