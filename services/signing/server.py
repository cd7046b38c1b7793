"""Signing's gRPC wiring: the only module here that knows about gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import signing_pb2, signing_pb2_grpc
from servicekit.grpc_server import ServiceServer
from servicekit.identity_keys import IdentityKeysUnavailable, identity_key_cache
from servicekit.lifecycle import GrpcApp, run_service
from servicekit.petition_view import PetitionView
from servicekit.rate_limits import FraudLimits
from servicekit.request_guard import RequestGuard
from servicekit.stores import CassandraSession, ReplaceableProducer, redis_client
from services.signing.intake import Outcome, Receipt, SignatureIntake, SignatureRequest
from services.signing.ledger import SignerLedger
from services.signing.moderation import Selection, SignatureModeration
from services.signing.publisher import SignaturePublisher
from services.signing.settings import SigningSettings
from services.signing.signature_lookup import SignatureLookup
from services.signing.staff_auth import StaffAuthorisation

IP_HASH_SECRET_FILE = "ip-hash.key"

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
        administrator = await self._staff.administrator(context.invocation_metadata())
        published = await self._moderation.invalidate(
            Selection(
                petition_id=request.petition_id,
                signers=tuple(request.signers),
                reason=request.reason,
                ip_hash=request.ip_hash,
                signed_after=seconds_of(request.signed_after, request.HasField("signed_after")),
                signed_before=seconds_of(request.signed_before, request.HasField("signed_before")),
            )
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


class SigningApp(GrpcApp):
    """Everything signing runs, with one start/stop pair.

    It learns petitions only from the petition-state topic (its petition
    view), never from the petitions service or its tables, so it keeps
    signing while that service is down; and it serves only once the view
    has read the whole topic, so it never calls a petition unknown that was
    created before it started."""

    def __init__(self, settings: SigningSettings):
        self.settings = settings
        self.redis = redis_client(settings)
        self.producer = ReplaceableProducer(settings, linger_ms=settings.producer_linger_ms)
        # Only for InvalidateSignatures' selection by IP or time window.
        self.cassandra = CassandraSession(settings)
        self.identity_channel = grpc.aio.insecure_channel(settings.identity_address)
        self.keys = identity_key_cache(self.identity_channel)
        self.lookup = SignatureLookup(self.cassandra, settings.signature_partitions)
        self._stores = contextlib.AsyncExitStack()
        self.server = ServiceServer([signing_pb2.DESCRIPTOR.services_by_name["Signing"].full_name], settings)

    def _servicer(self, view: PetitionView) -> SigningServicer:
        settings = self.settings
        ledger = SignerLedger(self.redis, claim_seconds=int(settings.publish_timeout_seconds) + 20)
        publisher = SignaturePublisher(
            self.producer,
            settings.signatures_topic,
            settings.publish_timeout_seconds,
            settings.max_in_flight,
            settings.publish_stall_seconds,
        )
        ip_hash_secret = settings.read_secret(IP_HASH_SECRET_FILE)
        intake = SignatureIntake(
            self.keys,
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
                    self.redis,
                    ip_hash_secret,
                    dict(settings.rate_limits),
                    frozenset(),
                    tuple(ipaddress.ip_network(n, strict=False) for n in settings.blocked_ip_networks),
                )
            ),
        )
        return SigningServicer(intake, SignatureModeration(self.lookup, publisher), StaffAuthorisation(self.keys))

    async def start(self) -> None:
        await self.cassandra.start()
        self.lookup.prepare()
        await self.producer.start()
        await self.redis.ping()
        try:
            await self.keys.refresh()
        except IdentityKeysUnavailable as error:
            # Not fatal: the keys are fetched on the first Sign instead.
            log.warning("identity keys not loaded at start", error=str(error))
        # Returns once the view holds every petition the topic held.
        view = await self._stores.enter_async_context(PetitionView.open(self.settings))
        signing_pb2_grpc.add_SigningServicer_to_server(self._servicer(view), self.server.server)
        # A view that stops following would serve ever older states: the
        # process exits instead, for its supervisor to restart it.
        self.run_in_background(view.followed(), "petition-view")
        await self.server.start()

    async def stop(self) -> None:
        # Drain RPCs first: each one is waiting on Kafka and must get its answer.
        await self.server.stop(self.settings.grace_seconds)
        await self.stop_background()
        await self._stores.aclose()
        await self.producer.stop()
        await self.identity_channel.close()
        await self.redis.aclose()
        await self.cassandra.stop()


def main() -> None:
    settings = SigningSettings()
    asyncio.run(run_service("signing", settings, lambda: SigningApp(settings)))
