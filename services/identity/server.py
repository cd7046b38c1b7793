"""Identity's gRPC wiring: the only module here that knows about gRPC."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import identity_pb2, identity_pb2_grpc
from servicekit.grpc_server import ServiceServer
from servicekit.lifecycle import GrpcApp, run_service
from servicekit.rate_limits import FraudLimits
from servicekit.request_guard import RequestGuard
from servicekit.signer_credential import SignerClaims
from servicekit.stores import redis_client
from services.identity.email_verification import EmailVerification
from services.identity.exchange import CredentialSigner, IdTokenExchange, IssuedCredential
from services.identity.http_fetcher import HttpDocumentFetcher
from services.identity.keyring import KEYS_DIRECTORY, ReloadingKeyRing
from services.identity.mailer import CodeMailer
from services.identity.oidc import IdTokenVerifier
from services.identity.one_time_codes import OneTimeCodes
from services.identity.settings import IdentitySettings
from services.identity.spent_id_tokens import SpentIdTokens

PSEUDONYM_SECRET_FILE = "pseudonym-hmac.key"

Context = grpc.aio.ServicerContext[Any, Any]

_METHODS = {
    "oidc": identity_pb2.VERIFICATION_METHOD_OIDC,
    "email": identity_pb2.VERIFICATION_METHOD_EMAIL,
}


class IdentityServicer(identity_pb2_grpc.IdentityServicer):
    def __init__(
        self,
        id_tokens: IdTokenExchange,
        email: EmailVerification,
        keyring: ReloadingKeyRing,
        keys_cache_seconds: int,
    ):
        self._id_tokens = id_tokens
        self._email = email
        self._keyring = keyring
        self._keys_cache_seconds = keys_cache_seconds

    async def ExchangeIdToken(
        self, request: identity_pb2.ExchangeIdTokenRequest, context: Context
    ) -> identity_pb2.SignerCredential:
        issued = await self._id_tokens.exchange(request.id_token, request.nonce, request.client_ip)
        return credential_message(issued)

    async def BeginEmailVerification(
        self, request: identity_pb2.BeginEmailVerificationRequest, context: Context
    ) -> identity_pb2.BeginEmailVerificationResponse:
        started = await self._email.begin(request.email, request.country, request.territory, request.client_ip)
        expires = Timestamp()
        expires.FromSeconds(int(started.expires_at))
        return identity_pb2.BeginEmailVerificationResponse(verification_id=started.verification_id, expires_at=expires)

    async def CompleteEmailVerification(
        self, request: identity_pb2.CompleteEmailVerificationRequest, context: Context
    ) -> identity_pb2.SignerCredential:
        issued = await self._email.complete(request.verification_id, request.code, request.client_ip)
        return credential_message(issued)

    async def GetVerificationKeys(
        self, request: identity_pb2.GetVerificationKeysRequest, context: Context
    ) -> identity_pb2.VerificationKeys:
        return identity_pb2.VerificationKeys(
            jwks_json=self._keyring.current.jwks_json(), cache_seconds=self._keys_cache_seconds
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
        self.redis = redis_client(settings)
        # A new key signs only once every verifier's cached key set has had
        # time to expire and include it.
        self.keyring = ReloadingKeyRing(
            settings.secret_file(KEYS_DIRECTORY),
            activation_delay_seconds=settings.verification_keys_cache_seconds + settings.keyring_reload_seconds,
        )
        secret = settings.read_secret(PSEUDONYM_SECRET_FILE)
        guard = RequestGuard(
            FraudLimits(
                self.redis,
                secret,
                dict(settings.rate_limits),
                frozenset(d.lower() for d in settings.blocked_email_domains),
                tuple(ipaddress.ip_network(n, strict=False) for n in settings.blocked_ip_networks),
            )
        )
        signer = CredentialSigner(self.keyring, settings.credential_ttl_seconds)
        verifier = IdTokenVerifier(
            settings.oidc_issuers,
            self.fetcher,
            refetch_interval=settings.jwks_refetch_interval_seconds,
            cache_seconds=settings.jwks_cache_seconds,
            leeway_seconds=settings.id_token_leeway_seconds,
        )
        password = settings.read_secret(settings.smtp_password_file).decode() if settings.smtp_password_file else ""
        email = EmailVerification(
            OneTimeCodes(
                self.redis,
                secret,
                settings.code_ttl_seconds,
                settings.code_attempts,
                settings.email_lock_failures,
                settings.email_lock_window_seconds,
            ),
            CodeMailer(
                settings.smtp_host,
                settings.smtp_port,
                settings.smtp_from,
                settings.smtp_starttls,
                settings.smtp_username,
                password,
            ),
            signer,
            secret,
            guard,
        )
        self.server = ServiceServer([identity_pb2.DESCRIPTOR.services_by_name["Identity"].full_name], settings)
        identity_pb2_grpc.add_IdentityServicer_to_server(
            IdentityServicer(
                IdTokenExchange(
                    verifier,
                    SpentIdTokens(self.redis, secret, settings.id_token_leeway_seconds),
                    signer,
                    secret,
                    guard,
                ),
                email,
                self.keyring,
                settings.verification_keys_cache_seconds,
            ),
            self.server.server,
        )

    async def _reload_keys_periodically(self) -> None:
        log = structlog.get_logger()
        while True:
            await asyncio.sleep(self.settings.keyring_reload_seconds)
            try:
                if self.keyring.reload():
                    log.info("signing keys changed", key_ids=self.keyring.current.key_ids())
            except (OSError, ValueError) as error:
                # A half-written key file: keep the ring we have, try again next round.
                log.error("signing keys not reloaded", error=repr(error))

    async def start(self) -> None:
        await self.fetcher.start()
        await self.redis.ping()
        self.run_in_background(self._reload_keys_periodically(), "reload-keys")
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(self.settings.grace_seconds)
        await self.stop_background()
        await self.fetcher.stop()
        await self.redis.aclose()


def main() -> None:
    settings = IdentitySettings()
    asyncio.run(run_service("identity", settings, lambda: IdentityApp(settings)))
