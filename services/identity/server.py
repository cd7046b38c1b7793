"""Identity's gRPC wiring (the only module here that knows about gRPC), and
its one factory: `create_server(settings)` enters the stores on one
AsyncExitStack, each ready when entered, the gRPC server last, so shutdown
unwinds them in reverse order by construction."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
import redis.asyncio as aioredis
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import identity_pb2, identity_pb2_grpc
from servicekit import role_credentials
from servicekit.errors import invalid
from servicekit.grpc_server import ServiceServer
from servicekit.lifecycle import FactoryApp, RunningServer, background_tasks, run_service, serving
from servicekit.rate_limits import FraudLimits
from servicekit.request_guard import RequestGuard
from servicekit.signer_credential import SignerClaims
from servicekit.stores import redis_connection
from services.identity.email_verification import EmailVerification
from services.identity.exchange import (
    DECLARED,
    PROVIDER_POLICY,
    VERIFIED_BIRTHDATE,
    CredentialSigner,
    IdTokenExchange,
    IssuedAuthorCredential,
    IssuedCredential,
    IssuedStaffCredential,
)
from services.identity.http_fetcher import HttpDocumentFetcher
from services.identity.keyring import ReloadingKeyRing
from services.identity.mailer import CodeMailer
from services.identity.names import NameForm
from services.identity.oidc import IdTokenVerifier
from services.identity.one_time_codes import OneTimeCodes
from services.identity.settings import KEYS_DIRECTORY, PSEUDONYM_SECRET_FILE, IdentitySettings
from services.identity.spent_id_tokens import SpentIdTokens

Context = grpc.aio.ServicerContext[Any, Any]

_METHODS = {
    "oidc": identity_pb2.VERIFICATION_METHOD_OIDC,
    "email": identity_pb2.VERIFICATION_METHOD_EMAIL,
}
_ADULT_BASES = {
    "": identity_pb2.ADULT_BASIS_UNSPECIFIED,
    VERIFIED_BIRTHDATE: identity_pb2.ADULT_BASIS_VERIFIED_BIRTHDATE,
    PROVIDER_POLICY: identity_pb2.ADULT_BASIS_PROVIDER_POLICY,
    DECLARED: identity_pb2.ADULT_BASIS_DECLARED,
}
_NAME_FORMS = {
    # Unspecified is the most discreet form, so an author who chose nothing
    # publishes the least.
    identity_pb2.DISPLAY_NAME_FORM_UNSPECIFIED: NameForm.GIVEN_NAME_AND_INITIAL,
    identity_pb2.DISPLAY_NAME_FORM_GIVEN_NAME_AND_INITIAL: NameForm.GIVEN_NAME_AND_INITIAL,
    identity_pb2.DISPLAY_NAME_FORM_FULL_NAME: NameForm.FULL_NAME,
}
_STAFF_ROLES = {
    role_credentials.MODERATOR: identity_pb2.STAFF_ROLE_MODERATOR,
    role_credentials.CLERK: identity_pb2.STAFF_ROLE_CLERK,
    role_credentials.ADMINISTRATOR: identity_pb2.STAFF_ROLE_ADMINISTRATOR,
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

    async def ExchangeAuthorIdToken(
        self, request: identity_pb2.ExchangeAuthorIdTokenRequest, context: Context
    ) -> identity_pb2.AuthorCredential:
        form = _NAME_FORMS.get(request.display_name)
        if form is None:
            raise invalid("display_name", f"{request.display_name} is not a DisplayNameForm")
        issued = await self._id_tokens.exchange_author(request.id_token, request.nonce, request.client_ip, form)
        return author_message(issued)

    async def ExchangeStaffIdToken(
        self, request: identity_pb2.ExchangeStaffIdTokenRequest, context: Context
    ) -> identity_pb2.StaffCredential:
        issued = await self._id_tokens.exchange_staff(request.id_token, request.nonce, request.client_ip)
        return staff_message(issued)

    async def BeginEmailVerification(
        self, request: identity_pb2.BeginEmailVerificationRequest, context: Context
    ) -> identity_pb2.BeginEmailVerificationResponse:
        started = await self._email.begin(
            request.email, request.country, request.territory, request.client_ip, request.declares_adult
        )
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


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromSeconds(int(seconds))
    return stamp


def author_message(issued: IssuedAuthorCredential) -> identity_pb2.AuthorCredential:
    return identity_pb2.AuthorCredential(
        token=issued.token,
        expires_at=_timestamp(issued.expires_at),
        author=issued.author,
        display_name=issued.display_name,
    )


def staff_message(issued: IssuedStaffCredential) -> identity_pb2.StaffCredential:
    return identity_pb2.StaffCredential(
        token=issued.token,
        expires_at=_timestamp(issued.expires_at),
        staff=issued.staff,
        name=issued.name,
        roles=sorted(_STAFF_ROLES[role] for role in issued.roles),
    )


def claims_message(claims: SignerClaims) -> identity_pb2.SignerClaims:
    return identity_pb2.SignerClaims(
        signer=claims.signer,
        method=_METHODS.get(claims.method, identity_pb2.VERIFICATION_METHOD_UNSPECIFIED),
        assurance_level=claims.assurance_level,
        country=claims.country,
        territory=claims.territory,
        adult=claims.adult,
        adult_basis=_ADULT_BASES.get(claims.adult_basis, identity_pb2.ADULT_BASIS_UNSPECIFIED),
    )


def identity_servicer(
    settings: IdentitySettings,
    redis: aioredis.Redis,
    fetcher: HttpDocumentFetcher,
    keyring: ReloadingKeyRing,
    secret: bytes,
    smtp_password: str,
) -> IdentityServicer:
    """The RPCs' domain objects, over stores that are already connected."""
    guard = RequestGuard(
        FraudLimits(
            redis,
            secret,
            dict(settings.rate_limits),
            frozenset(d.lower() for d in settings.blocked_email_domains),
            tuple(ipaddress.ip_network(n, strict=False) for n in settings.blocked_ip_networks),
        )
    )
    signer = CredentialSigner(
        keyring,
        settings.credential_ttl_seconds,
        author_ttl_seconds=settings.author_credential_ttl_seconds,
        staff_ttl_seconds=settings.staff_credential_ttl_seconds,
    )
    verifier = IdTokenVerifier(
        settings.oidc_issuers,
        fetcher,
        refetch_interval=settings.jwks_refetch_interval_seconds,
        cache_seconds=settings.jwks_cache_seconds,
        leeway_seconds=settings.id_token_leeway_seconds,
    )
    email = EmailVerification(
        OneTimeCodes(
            redis,
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
            smtp_password,
        ),
        signer,
        secret,
        guard,
    )
    return IdentityServicer(
        IdTokenExchange(
            verifier,
            SpentIdTokens(redis, secret, settings.id_token_leeway_seconds),
            signer,
            secret,
            guard,
            {(entry.issuer, entry.subject): frozenset(entry.roles) for entry in settings.staff_roles},
        ),
        email,
        keyring,
        settings.verification_keys_cache_seconds,
    )


async def reload_keys_periodically(keyring: ReloadingKeyRing, interval_seconds: float) -> None:
    log = structlog.get_logger()
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            if keyring.reload():
                log.info("signing keys changed", key_ids=keyring.current.key_ids())
        except (OSError, ValueError) as error:
            # A half-written key file: keep the ring we have, try again next round.
            log.error("signing keys not reloaded", error=repr(error))


@asynccontextmanager
async def create_server(settings: IdentitySettings) -> AsyncIterator[RunningServer]:
    """The identity service, serving on settings.grpc_address (port 0 in
    tests: the yielded port says which). Keys and secrets are read before
    anything connects, so a missing one stops the start at once; shutdown
    unwinds the stack: the server drains, then the key reloading stops,
    then the HTTP session and Redis close."""
    # A new key signs only once every verifier's cached key set has had
    # time to expire and include it.
    keyring = ReloadingKeyRing(
        settings.secret_file(KEYS_DIRECTORY),
        activation_delay_seconds=settings.verification_keys_cache_seconds + settings.keyring_reload_seconds,
    )
    secret = settings.read_secret(PSEUDONYM_SECRET_FILE)
    password = settings.read_secret(settings.smtp_password_file).decode() if settings.smtp_password_file else ""
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(redis_connection(settings))
        fetcher = await stack.enter_async_context(HttpDocumentFetcher.open())
        background = await stack.enter_async_context(background_tasks())
        background.start(reload_keys_periodically(keyring, settings.keyring_reload_seconds), "reload-keys")
        server = ServiceServer([identity_pb2.DESCRIPTOR.services_by_name["Identity"].full_name], settings)
        identity_pb2_grpc.add_IdentityServicer_to_server(
            identity_servicer(settings, redis, fetcher, keyring, secret, password), server.server
        )
        # Entered last, so it stops first.
        await stack.enter_async_context(serving(server, settings.grace_seconds))
        yield RunningServer(server.port, background)


def main() -> None:
    settings = IdentitySettings()
    asyncio.run(run_service("identity", settings, lambda: FactoryApp(lambda: create_server(settings))))
