"""Signing's gRPC wiring (with tally_client.py, its client of the tally, the
only modules here that know about gRPC), and
its one factory, `create_server(settings)`: the stores entered on one
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

from petitions.v1 import signing_pb2, signing_pb2_grpc
from servicekit.credential_keys import CredentialKeyCache
from servicekit.grpc_server import ServiceServer
from servicekit.identity_keys import IdentityKeysUnavailable, identity_keys
from servicekit.lifecycle import FactoryApp, RunningServer, background_tasks, run_service, serving
from servicekit.petition_view import PetitionView
from servicekit.rate_limits import FraudLimits
from servicekit.request_guard import RequestGuard
from servicekit.staff_auth import StaffAuthorisation, bearer
from servicekit.stores import ReplaceableProducer, kafka_producer, redis_connection
from services.signing.intake import Outcome, Receipt, SignatureIntake, SignatureRequest
from services.signing.ledger import SignerLedger
from services.signing.moderation import Selection, SignatureModeration
from services.signing.publisher import SignaturePublisher
from services.signing.settings import IP_HASH_SECRET_FILE, SigningSettings
from services.signing.tally_client import TallySignatures, tally_signatures

Context = grpc.aio.ServicerContext[Any, Any]
log = structlog.get_logger()


class SigningServicer(signing_pb2_grpc.SigningServicer):
    def __init__(self, intake: SignatureIntake, moderation: SignatureModeration, staff: StaffAuthorisation):
        self._intake = intake
        self._moderation = moderation
        self._staff = staff

    async def Sign(self, request: signing_pb2.SignRequest, context: Context) -> signing_pb2.SignResponse:
        receipt = await self._intake.sign(
            SignatureRequest(
                credential=request.credential,
                petition_id=request.petition_id,
                idempotency_key=request.idempotency_key,
                client_ip=request.client_ip,
            )
        )
        return sign_response(receipt)

    async def InvalidateSignatures(
        self, request: signing_pb2.InvalidateSignaturesRequest, context: Context
    ) -> signing_pb2.InvalidateSignaturesResponse:
        metadata = context.invocation_metadata()
        administrator = await self._staff.administrator(metadata)
        published = await self._moderation.invalidate(
            Selection(
                petition_id=request.petition_id,
                signers=tuple(request.signers),
                reason=request.reason,
                ip_hash=request.ip_hash,
                signed_after=seconds_of(request.signed_after, request.HasField("signed_after")),
                signed_before=seconds_of(request.signed_before, request.HasField("signed_before")),
            ),
            # Forwarded to the tally, which checks it again: its answer
            # names signers.
            bearer(metadata),
            (administrator.staff, administrator.name),
        )
        # Who decided, by pseudonym (never a name), for the operators' record.
        log.info(
            "signatures invalidated",
            petition_id=request.petition_id,
            published=published,
            staff=administrator.staff,
        )
        return signing_pb2.InvalidateSignaturesResponse(published=published)


def seconds_of(value: Timestamp, present: bool) -> float | None:
    return value.ToNanoseconds() / 1e9 if present else None


def timestamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def sign_response(receipt: Receipt) -> signing_pb2.SignResponse:
    response = signing_pb2.SignResponse(
        outcome=(
            signing_pb2.SignResponse.OUTCOME_ACCEPTED
            if receipt.outcome is Outcome.ACCEPTED
            else signing_pb2.SignResponse.OUTCOME_ALREADY_SIGNED
        ),
        signature_id=receipt.signature_id,
        signed_at=timestamp(receipt.signed_at),
    )
    if receipt.position is not None:
        response.position.topic = receipt.position.topic
        response.position.partition = receipt.position.partition
        response.position.offset = receipt.position.offset
    return response


def signing_servicer(
    settings: SigningSettings,
    view: PetitionView,
    redis: aioredis.Redis,
    producer: ReplaceableProducer,
    keys: CredentialKeyCache[IdentityKeysUnavailable],
    stored: TallySignatures,
    ip_hash_secret: bytes,
) -> SigningServicer:
    """The RPCs' domain objects, over stores that are already connected."""
    ledger = SignerLedger(redis, claim_seconds=int(settings.publish_timeout_seconds) + 20)
    publisher = SignaturePublisher(
        producer,
        settings.signatures_topic,
        settings.publish_timeout_seconds,
        settings.max_in_flight,
        settings.publish_stall_seconds,
    )
    intake = SignatureIntake(
        keys,
        view,
        ledger,
        publisher,
        ip_hash_secret,
        # A concurrent request of the same person waits at most as long
        # as Kafka may take to acknowledge the first one.
        pending_wait_seconds=settings.publish_timeout_seconds + 1,
        receipt_grace_seconds=settings.idempotency_ttl_seconds,
        guard=RequestGuard(
            FraudLimits(
                redis,
                ip_hash_secret,
                dict(settings.rate_limits),
                frozenset(),
                tuple(ipaddress.ip_network(n, strict=False) for n in settings.blocked_ip_networks),
            )
        ),
    )
    return SigningServicer(intake, SignatureModeration(stored, publisher), StaffAuthorisation(keys))


@asynccontextmanager
async def create_server(settings: SigningSettings) -> AsyncIterator[RunningServer]:
    """The signing service, serving on settings.grpc_address (port 0 in
    tests: the yielded port says which).

    It learns petitions only from the petition-state topic (its petition
    view), never from the petitions service or its tables, so it keeps
    signing while that service is down; and it serves only once the view
    has read the whole topic, so it never calls a petition unknown that was
    created before it started.

    Shutdown unwinds the stack: the server drains first (each Sign in flight
    is waiting on Kafka and must get its answer, so the producer is still
    open), then the view stops following, then the stores close."""
    ip_hash_secret = settings.read_secret(IP_HASH_SECRET_FILE)
    async with AsyncExitStack() as stack:
        producer = await stack.enter_async_context(kafka_producer(settings, linger_ms=settings.producer_linger_ms))
        redis = await stack.enter_async_context(redis_connection(settings))
        # When identity is not up yet, its keys are fetched on the first Sign.
        keys = await stack.enter_async_context(identity_keys(settings.identity_address))
        # Only for InvalidateSignatures' selection by IP or time window: the
        # tally owns the stored signatures.
        stored = await stack.enter_async_context(tally_signatures(settings.tally_address))
        # Returns once the view holds every petition the topic held.
        view = await stack.enter_async_context(PetitionView.open(settings))
        background = await stack.enter_async_context(background_tasks())
        # A view that stops following would serve ever older states: the
        # process exits instead, for its supervisor to restart it.
        background.start(view.followed(), "petition-view")
        server = ServiceServer([signing_pb2.DESCRIPTOR.services_by_name["Signing"].full_name], settings)
        signing_pb2_grpc.add_SigningServicer_to_server(
            signing_servicer(settings, view, redis, producer, keys, stored, ip_hash_secret), server.server
        )
        # Entered last, so it stops first.
        await stack.enter_async_context(serving(server, settings.grace_seconds))
        yield RunningServer(server.port, background)


def main() -> None:
    settings = SigningSettings()
    asyncio.run(run_service("signing", settings, lambda: FactoryApp(lambda: create_server(settings))))
