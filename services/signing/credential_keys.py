"""Identity's public keys for signing's offline credential checks: the
shared cache (servicekit.credential_keys) over signing's own channel to
identity. Keys are fetched at start and refreshed by the cache's rules, so a
key rotation reaches signing without a restart."""

from __future__ import annotations

import grpc

from petitions.v1 import identity_pb2, identity_pb2_grpc
from servicekit.credential_keys import CredentialKeyCache


class IdentityKeysUnavailable(Exception):
    """Identity could not be asked for its keys."""


def identity_key_cache(channel: grpc.aio.Channel) -> CredentialKeyCache[IdentityKeysUnavailable]:
    stub = identity_pb2_grpc.IdentityStub(channel)

    async def fetch() -> identity_pb2.VerificationKeys:
        try:
            keys: identity_pb2.VerificationKeys = await stub.GetVerificationKeys(
                identity_pb2.GetVerificationKeysRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            raise IdentityKeysUnavailable(f"identity keys: {error.code().name} {error.details()}") from None
        return keys

    return CredentialKeyCache(fetch, IdentityKeysUnavailable)
