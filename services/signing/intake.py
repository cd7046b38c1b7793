"""The signing decision: is this person allowed to sign this petition now,
have they already, and is the signature safely in Kafka."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2, identity_pb2
from servicekit.credential_keys import CredentialKeyCache
from servicekit.eligibility import check_eligible
from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.identity_keys import IdentityKeysUnavailable
from servicekit.petition_ids import PETITION_ID, PETITION_ID_RULE
from servicekit.petition_view import PetitionState, ViewPetition, petition_not_found
from servicekit.rate_limits import Bucket, Refusal, client_address
from servicekit.request_guard import RequestGuard, refusal_error
from servicekit.signer_credential import CredentialRejected, SignerClaims
from services.signing.ledger import EntryState, LedgerEntry, LedgerUnavailable, SignerLedger
from services.signing.metric_defs import (
    SIGN_ACCEPTED,
    SIGN_ACCEPTED_REPLAY,
    SIGN_ALREADY_SIGNED,
    SIGN_FAILED,
    SIGN_OUTCOMES,
    sign_refusal_label,
)
from services.signing.publisher import (
    LogPosition,
    Overloaded,
    PublishFailed,
    SignaturePublisher,
    signature_key,
)

IDEMPOTENCY_KEY = re.compile(r"\A[\x21-\x7e]{8,128}\Z")
MAX_CREDENTIAL_LENGTH = 4096

T = TypeVar("T")
log = structlog.get_logger()

_METHODS = {
    "oidc": identity_pb2.VERIFICATION_METHOD_OIDC,
    "email": identity_pb2.VERIFICATION_METHOD_EMAIL,
}


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    ALREADY_SIGNED = "already_signed"


@dataclass(frozen=True)
class SignatureRequest:
    credential: str
    petition_id: str
    idempotency_key: str
    client_ip: str


@dataclass(frozen=True)
class Receipt:
    outcome: Outcome
    signature_id: str
    signed_at: float
    position: LogPosition | None
    # True when the answer repeats an earlier request's (same idempotency
    # key), so nothing new was published.
    replayed: bool = False


def validate(request: SignatureRequest) -> None:
    if not request.credential:
        raise invalid("credential", "is required")
    if len(request.credential) > MAX_CREDENTIAL_LENGTH:
        raise invalid("credential", f"is longer than {MAX_CREDENTIAL_LENGTH} characters")
    if not PETITION_ID.fullmatch(request.petition_id):
        raise invalid("petition_id", PETITION_ID_RULE)
    if request.idempotency_key and not IDEMPOTENCY_KEY.fullmatch(request.idempotency_key):
        raise invalid("idempotency_key", "must be 8 to 128 printable ASCII characters without spaces")
    if request.client_ip and not is_ip_address(request.client_ip):
        raise invalid("client_ip", "is not an IPv4 or IPv6 address")


def is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 address, with at most an IPv6 interface zone."""
    try:
        client_address(text)
    except ValueError:
        return False
    return True


def check_can_sign(petition: ViewPetition | None, petition_id: str, claims: SignerClaims, now: float) -> ViewPetition:
    if petition is None:
        raise petition_not_found(petition_id)
    if not petition.accepts_signatures_at(now):
        if petition.state is PetitionState.OPEN and petition.opens_at is not None and now < petition.opens_at:
            message = f"petition {petition_id!r} is not open for signatures yet"
        elif petition.state is PetitionState.OPEN:
            message = f"petition {petition_id!r} is closed: its signature period has ended"
        else:
            message = f"petition {petition_id!r} is {petition.state.value}, not open for signatures"
        raise DomainError(ErrorKind.FAILED_PRECONDITION, "PETITION_NOT_OPEN", message)
    check_eligible(petition.eligibility, claims)
    return petition


class Petitions(Protocol):
    """Where the intake finds a petition: the process's petition view."""

    async def get_current(self, petition_id: str) -> ViewPetition | None:
        """No I/O for a petition the view holds; for another, waits (at most
        a second) for the view to read what the topic holds now, so a
        petition created a moment ago is found."""
        ...


class SignatureIntake:
    def __init__(
        self,
        keys: CredentialKeyCache[IdentityKeysUnavailable],
        petitions: Petitions,
        ledger: SignerLedger,
        publisher: SignaturePublisher,
        ip_hash_secret: bytes,
        pending_wait_seconds: float,
        guard: RequestGuard,
        receipt_grace_seconds: float,
        clock: Callable[[], float] = time.time,
    ):
        self._keys = keys
        self._petitions = petitions
        self._ledger = ledger
        self._publisher = publisher
        self._ip_secret = ip_hash_secret
        self._clock = clock
        self._pending_wait_seconds = pending_wait_seconds
        self._guard = guard
        self._receipt_grace = receipt_grace_seconds
        # Ledger writes that outlive a cancelled call (kept so they are not
        # garbage-collected mid-flight).
        self._detached: set[asyncio.Task[None]] = set()

    async def sign(self, request: SignatureRequest) -> Receipt:
        """Decides one signature, and counts the decision by reason."""
        try:
            receipt = await self._sign(request)
        except DomainError as error:
            SIGN_OUTCOMES.labels(sign_refusal_label(error.reason)).inc()
            raise
        except Exception:
            SIGN_OUTCOMES.labels(SIGN_FAILED).inc()
            raise
        SIGN_OUTCOMES.labels(_outcome_label(receipt)).inc()
        return receipt

    async def _sign(self, request: SignatureRequest) -> Receipt:
        validate(request)
        self._guard.check_blocked(ip=request.client_ip)
        claims = await self._verify(request.credential)
        now = self._clock()
        petition = check_can_sign(
            await self._petitions.get_current(request.petition_id), request.petition_id, claims, now
        )

        idempotency_hash = _short_hash(request.idempotency_key) if request.idempotency_key else ""
        claim = LedgerEntry(EntryState.PENDING, uuid.uuid4().hex, idempotency_hash, now)
        buckets = self._guard.buckets(sign_ip=request.client_ip, sign_signer=claims.signer)
        try:
            existing = await self._claim_or_wait(request.petition_id, claims.signer, claim, buckets)
        except asyncio.CancelledError:
            # The admission may have run before the caller gave up: release
            # (a compare-and-delete of this request's own claim) either way.
            self._detach(self._ledger.release(request.petition_id, claims.signer, claim))
            raise
        if existing is not None:
            return _answer_for_existing(existing, idempotency_hash)

        event = self._event(request, claims, claim)
        try:
            position = await self._publisher.publish(signature_key(request.petition_id, claims.signer), event)
        except asyncio.CancelledError:
            # The caller gave up (its deadline, a disconnect) before Kafka
            # answered: like a failed publish, the event may or may not be
            # stored. Free the person's claim all the same, or every retry
            # waits on it as SIGNATURE_IN_PROGRESS until it expires; a retry
            # then publishes again, and the tally counts the person once.
            self._detach(self._ledger.release(request.petition_id, claims.signer, claim))
            raise
        except (PublishFailed, Overloaded) as error:
            await _ledger_call(self._ledger.release(request.petition_id, claims.signer, claim))
            if isinstance(error, Overloaded):
                raise DomainError(
                    ErrorKind.RESOURCE_EXHAUSTED, "OVERLOADED", str(error), retry_after_seconds=2
                ) from None
            raise DomainError(
                ErrorKind.UNAVAILABLE,
                "BROKER_UNAVAILABLE",
                f"{error}; retry with the same idempotency key",
                retry_after_seconds=1,
            ) from None
        signed = LedgerEntry(
            EntryState.SIGNED,
            claim.signature_id,
            idempotency_hash,
            now,
            position.topic,
            position.partition,
            position.offset,
        )
        # The signature is in Kafka: it counts whatever happens next. A
        # failure to record the receipt only means a later duplicate is
        # published and then ignored by the tally.
        expires_at = self._receipt_expiry(petition)
        try:
            await self._ledger.record(request.petition_id, claims.signer, signed, expires_at)
        except asyncio.CancelledError:
            # Cancelled with the signature in Kafka: the receipt is written
            # all the same (a SET, so writing it twice is harmless), and a
            # retry with the same key gets this signature back.
            self._detach(self._ledger.record(request.petition_id, claims.signer, signed, expires_at))
            raise
        except LedgerUnavailable as error:
            log.warning("receipt not recorded", petition_id=request.petition_id, error=repr(error))
        return Receipt(Outcome.ACCEPTED, signed.signature_id, now, position)

    def _detach(self, write: Awaitable[None]) -> None:
        """Runs a ledger write to its end whatever happens to the call that
        needed it; a failure is logged (the claim then expires by itself)."""

        async def run() -> None:
            try:
                await write
            except LedgerUnavailable as error:
                log.warning("ledger write after a cancelled Sign failed", error=repr(error))

        task = asyncio.get_running_loop().create_task(run())
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    def _receipt_expiry(self, petition: ViewPetition) -> float | None:
        if petition.closes_at is None:
            return None
        return petition.closes_at + self._receipt_grace

    async def _claim_or_wait(
        self, petition_id: str, signer: str, claim: LedgerEntry, buckets: Sequence[Bucket]
    ) -> LedgerEntry | None:
        """Takes the request's rate-limit tokens and claims the right to
        publish (None), or returns the settled entry of the request that
        holds it. While another request of the same person is still waiting
        for Kafka, waits for its outcome: if it succeeds this one is
        ALREADY_SIGNED; if it fails, this one claims."""
        deadline = time.monotonic() + self._pending_wait_seconds
        pause = 0.01
        while True:
            existing = await _ledger_call(self._ledger.admit(petition_id, signer, claim, buckets))
            if isinstance(existing, Refusal):
                raise refusal_error(existing)
            # A request takes its tokens once, however long it waits.
            buckets = ()
            if existing is None or existing.state is not EntryState.PENDING:
                return existing
            if time.monotonic() + pause > deadline:
                return existing
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    async def _verify(self, token: str) -> SignerClaims:
        try:
            return (await self._keys.verify(token)).claims
        except CredentialRejected as error:
            raise DomainError(ErrorKind.UNAUTHENTICATED, "CREDENTIAL_REJECTED", str(error)) from None
        except IdentityKeysUnavailable as error:
            raise DomainError(
                ErrorKind.UNAVAILABLE, "IDENTITY_UNAVAILABLE", str(error), retry_after_seconds=2
            ) from None

    def _event(self, request: SignatureRequest, claims: SignerClaims, claim: LedgerEntry) -> events_pb2.SignatureEvent:
        signed_at = Timestamp()
        signed_at.FromNanoseconds(int(claim.signed_at * 1e9))
        ip_hash = ""
        if request.client_ip:
            ip_hash = hmac.digest(self._ip_secret, request.client_ip.encode(), "sha256").hex()[:32]
        return events_pb2.SignatureEvent(
            accepted=events_pb2.SignatureAccepted(
                signature_id=claim.signature_id,
                petition_id=request.petition_id,
                signer=claims.signer,
                method=_METHODS.get(claims.method, identity_pb2.VERIFICATION_METHOD_UNSPECIFIED),
                country=claims.country,
                territory=claims.territory,
                signed_at=signed_at,
                ip_hash=ip_hash,
                idempotency_key_hash=claim.idempotency_hash,
            )
        )


def _outcome_label(receipt: Receipt) -> str:
    if receipt.outcome is Outcome.ALREADY_SIGNED:
        return SIGN_ALREADY_SIGNED
    return SIGN_ACCEPTED_REPLAY if receipt.replayed else SIGN_ACCEPTED


def _answer_for_existing(existing: LedgerEntry, idempotency_hash: str) -> Receipt:
    same_request = bool(idempotency_hash) and existing.idempotency_hash == idempotency_hash
    if existing.state is EntryState.PENDING:
        raise DomainError(
            ErrorKind.UNAVAILABLE,
            "SIGNATURE_IN_PROGRESS",
            "a signature by this person on this petition is being recorded; retry shortly",
            retry_after_seconds=1,
        )
    if same_request:
        position = LogPosition(existing.topic, existing.partition, existing.offset)
        return Receipt(Outcome.ACCEPTED, existing.signature_id, existing.signed_at, position, replayed=True)
    return Receipt(Outcome.ALREADY_SIGNED, existing.signature_id, existing.signed_at, None)


async def _ledger_call(call: Awaitable[T]) -> T:
    try:
        return await call
    except LedgerUnavailable as error:
        raise DomainError(
            ErrorKind.UNAVAILABLE,
            "LEDGER_UNAVAILABLE",
            f"the signature ledger cannot be reached: {error}",
            retry_after_seconds=2,
        ) from None


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]
