"""Signing's gRPC wiring: the only module here that knows about gRPC."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from typing import Any

import grpc
import structlog

from petitions.v1 import petition_pb2, signing_pb2, signing_pb2_grpc
from servicekit.errors import DomainError, ErrorKind
from servicekit.grpc_server import ServiceServer
from servicekit.lifecycle import GrpcApp, run_service
from servicekit.rate_limits import FraudLimits
from servicekit.request_guard import RequestGuard
from servicekit.stores import CassandraSession, ReplaceableProducer, redis_client
from services.catalogue.cache import CachedCatalogue
from services.catalogue.messages import STATE_FROM_PROTO, petition_message, seconds_of, timestamp
from services.catalogue.store import PetitionStore
from services.signing.catalogue_admin import CatalogueAdmin
from services.signing.credential_keys import IdentityKeysUnavailable, identity_key_cache
from services.signing.deadlines import DeadlineCloser, PetitionEvents
from services.signing.intake import Outcome, Receipt, SignatureIntake, SignatureRequest
from services.signing.ledger import SignerLedger
from services.signing.moderation import Selection, SignatureModeration
from services.signing.publisher import SignaturePublisher
from services.signing.settings import SigningSettings
from services.signing.signature_lookup import SignatureLookup

ADMIN_TOKEN_FILE = "admin-token"
IP_HASH_SECRET_FILE = "ip-hash.key"

Context = grpc.aio.ServicerContext[Any, Any]


class SigningServicer(signing_pb2_grpc.SigningServicer):
    def __init__(
        self, intake: SignatureIntake, admin: CatalogueAdmin, moderation: SignatureModeration, admin_token: bytes
    ):
        self._intake = intake
        self._moderation = moderation
        self._admin = admin
        self._admin_token = admin_token

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

    async def CreatePetition(
        self, request: signing_pb2.CreatePetitionRequest, context: Context
    ) -> petition_pb2.Petition:
        self._authorise(context)
        return petition_message(await self._admin.create(request))

    async def OpenPetition(self, request: signing_pb2.OpenPetitionRequest, context: Context) -> petition_pb2.Petition:
        self._authorise(context)
        return petition_message(await self._admin.transition(request.petition_id, "open"))

    async def ClosePetition(self, request: signing_pb2.ClosePetitionRequest, context: Context) -> petition_pb2.Petition:
        self._authorise(context)
        return petition_message(await self._admin.transition(request.petition_id, "close"))

    async def GetPetition(self, request: signing_pb2.GetPetitionRequest, context: Context) -> petition_pb2.Petition:
        return petition_message(await self._admin.get(request.petition_id))

    async def ListPetitions(
        self, request: signing_pb2.ListPetitionsRequest, context: Context
    ) -> signing_pb2.ListPetitionsResponse:
        state = STATE_FROM_PROTO.get(request.state)
        page = await self._admin.list(state, request.page_size, request.page_token)
        return signing_pb2.ListPetitionsResponse(
            petitions=[petition_message(p) for p in page.petitions], next_page_token=page.next_token
        )

    async def InvalidateSignatures(
        self, request: signing_pb2.InvalidateSignaturesRequest, context: Context
    ) -> signing_pb2.InvalidateSignaturesResponse:
        self._authorise(context)
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
        return signing_pb2.InvalidateSignaturesResponse(published=published)

    def _authorise(self, context: Context) -> None:
        metadata = dict(context.invocation_metadata() or ())
        header = str(metadata.get("authorization", ""))
        if not header.startswith("Bearer "):
            raise DomainError(
                ErrorKind.UNAUTHENTICATED,
                "ADMIN_TOKEN_MISSING",
                "this call needs 'authorization: Bearer <token>'",
            )
        if not hmac.compare_digest(header.removeprefix("Bearer ").encode(), self._admin_token):
            raise DomainError(ErrorKind.PERMISSION_DENIED, "ADMIN_TOKEN_INVALID", "the admin token is not valid")


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
    """Everything signing runs, with one start/stop pair."""

    def __init__(self, settings: SigningSettings):
        self.settings = settings
        self.redis = redis_client(settings)
        self.producer = ReplaceableProducer(settings, linger_ms=settings.producer_linger_ms)
        self.cassandra = CassandraSession(settings)
        self.identity_channel = grpc.aio.insecure_channel(settings.identity_address)
        self.keys = identity_key_cache(self.identity_channel)
        self.store = PetitionStore(self.cassandra)
        self.lookup = SignatureLookup(self.cassandra, settings.signature_partitions)
        catalogue = CachedCatalogue(self.store, settings.catalogue_cache_seconds)
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
            catalogue,
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
        events = PetitionEvents(self.producer, settings.petition_events_topic)
        self.closer = DeadlineCloser(self.store, catalogue, events, settings.deadline_check_seconds)
        self.server = ServiceServer([signing_pb2.DESCRIPTOR.services_by_name["Signing"].full_name], settings)
        signing_pb2_grpc.add_SigningServicer_to_server(
            SigningServicer(
                intake,
                CatalogueAdmin(self.store, catalogue, events),
                SignatureModeration(self.lookup, publisher),
                settings.read_secret(ADMIN_TOKEN_FILE),
            ),
            self.server.server,
        )

    async def start(self) -> None:
        await self.cassandra.start()
        self.store.prepare()
        self.lookup.prepare()
        await self.producer.start()
        await self.redis.ping()
        try:
            await self.keys.refresh()
        except IdentityKeysUnavailable as error:
            # Not fatal: the keys are fetched on the first Sign instead.
            structlog.get_logger().warning("identity keys not loaded at start", error=str(error))
        self.run_in_background(self.closer.run(), "close-at-deadline")
        await self.server.start()

    async def stop(self) -> None:
        # Drain RPCs first: each one is waiting on Kafka and must get its answer.
        await self.server.stop(self.settings.grace_seconds)
        await self.stop_background()
        await self.producer.stop()
        await self.identity_channel.close()
        await self.redis.aclose()
        await self.cassandra.stop()


def main() -> None:
    settings = SigningSettings()
    asyncio.run(run_service("signing", settings, lambda: SigningApp(settings)))
