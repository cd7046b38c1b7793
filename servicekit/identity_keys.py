"""Identity's public keys over a gRPC channel of the caller's own: the
shared key cache (servicekit.credential_keys) for any service that checks
identity's credentials offline (signing's signer credentials, the petitions
service's author and staff credentials)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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


@asynccontextmanager
async def identity_keys(address: str) -> AsyncIterator[CredentialKeyCache[IdentityKeysUnavailable]]:
    """A key cache with its own channel to identity, closed on exit. The keys
    are fetched on first use when identity is not up yet at start."""
    channel = grpc.aio.insecure_channel(address)
    try:
        cache = identity_key_cache(channel)
        # When identity is not up yet, the keys are fetched on the first
        # credential checked instead.
        with contextlib.suppress(IdentityKeysUnavailable):
            await cache.refresh()
        yield cache
    finally:
        await channel.close()
