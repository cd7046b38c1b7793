"""Identity's gRPC wiring: the only module here that knows about gRPC."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import identity_pb2, identity_pb2_grpc
from servicekit.errors import not_yet_available
from servicekit.grpc_server import ServiceServer
from servicekit.lifecycle import GrpcApp, run_service
from servicekit.signer_credential import SignerClaims
from services.identity.exchange import CredentialIssuer, IssuedCredential
from services.identity.http_fetcher import HttpDocumentFetcher
from services.identity.keyring import KEYS_DIRECTORY, KeyRing, load_keyring
from services.identity.oidc import IdTokenVerifier
from services.identity.settings import IdentitySettings

PSEUDONYM_SECRET_FILE = "pseudonym-hmac.key"

_METHODS = {
    "oidc": identity_pb2.VERIFICATION_METHOD_OIDC,
    "email": identity_pb2.VERIFICATION_METHOD_EMAIL,
}


class IdentityServicer(identity_pb2_grpc.IdentityServicer):
    def __init__(self, issuer: CredentialIssuer, keyring: KeyRing, keys_cache_seconds: int):
        self._issuer = issuer
        self._keyring = keyring
        self._keys_cache_seconds = keys_cache_seconds

    async def ExchangeIdToken(
        self,
        request: identity_pb2.ExchangeIdTokenRequest,
        context: grpc.aio.ServicerContext[identity_pb2.ExchangeIdTokenRequest, identity_pb2.SignerCredential],
    ) -> identity_pb2.SignerCredential:
        issued = await self._issuer.exchange_id_token(request.id_token, request.nonce)
        return credential_message(issued)

    # Email one-time codes come with the identity issue; until then the RPCs
    # answer UNIMPLEMENTED with a clear message.
    async def BeginEmailVerification(
        self,
        request: identity_pb2.BeginEmailVerificationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> identity_pb2.BeginEmailVerificationResponse:
        raise not_yet_available("BeginEmailVerification")

    async def CompleteEmailVerification(
        self,
        request: identity_pb2.CompleteEmailVerificationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> identity_pb2.SignerCredential:
        raise not_yet_available("CompleteEmailVerification")

    async def GetVerificationKeys(
        self,
        request: identity_pb2.GetVerificationKeysRequest,
        context: grpc.aio.ServicerContext[identity_pb2.GetVerificationKeysRequest, identity_pb2.VerificationKeys],
    ) -> identity_pb2.VerificationKeys:
        return identity_pb2.VerificationKeys(
            jwks_json=self._keyring.jwks_json(), cache_seconds=self._keys_cache_seconds
        )


def credential_message(issued: IssuedCredential) -> identity_pb2.SignerCredential:
    expires = Timestamp()
    expires.FromSeconds(int(issued.expires_at))
    return identity_pb2.SignerCredential(token=issued.token, expires_at=expires, claims=claims_message(issued.claims))


def claims_message(claims: SignerClaims) -> identity_pb2.SignerClaims:
    return identity_pb2.SignerClaims(
        signer=claims.signer,
        method=_METHODS.get(claims.method, identity_pb2.VERIFICATION_METHOD_UNSPECIFIED),
        assurance_level=claims.assurance_level,
        country=claims.country,
        territory=claims.territory,
        adult=claims.adult,
    )


class IdentityApp(GrpcApp):
    """Everything identity runs, with one start/stop pair."""

    def __init__(self, settings: IdentitySettings):
        self.settings = settings
        self.fetcher = HttpDocumentFetcher()
        keyring = load_keyring(settings.secret_file(KEYS_DIRECTORY))
        verifier = IdTokenVerifier(
            settings.oidc_issuers,
            self.fetcher,
            refetch_interval=settings.jwks_refetch_interval_seconds,
            cache_seconds=settings.jwks_cache_seconds,
            leeway_seconds=settings.id_token_leeway_seconds,
        )
        issuer = CredentialIssuer(
            verifier, keyring, settings.read_secret(PSEUDONYM_SECRET_FILE), settings.credential_ttl_seconds
        )
        self.server = ServiceServer(
            [identity_pb2.DESCRIPTOR.services_by_name["Identity"].full_name], settings.grpc_address
        )
        identity_pb2_grpc.add_IdentityServicer_to_server(
            IdentityServicer(issuer, keyring, settings.verification_keys_cache_seconds), self.server.server
        )

    async def start(self) -> None:
        await self.fetcher.start()
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(self.settings.grace_seconds)
        await self.fetcher.stop()


def main() -> None:
    settings = IdentitySettings()
    asyncio.run(run_service("identity", settings, lambda: IdentityApp(settings)))
