"""Bad requests get a precise status and reason, and change nothing: no
event reaches Kafka, no count moves."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import petition_pb2, petitions_pb2, signing_pb2, tally_pb2
from servicekit import signer_credential
from servicekit.signer_credential import SignerClaims
from tests.errors import rejection as read_rejection
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = pytest.mark.stack


def rejection(call: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    """The status code, ErrorInfo reason and BadRequest fields of a failed call."""
    found = read_rejection(call)
    return found.code, found.reason, found.fields


@pytest.fixture
def nothing_published(system: SystemClient) -> Iterator[None]:
    before = system.end_offsets()
    yield
    assert system.end_offsets() == before, "a rejected request published to Kafka"


def sign_rejected(system: SystemClient, credential: str, petition_id: str) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.RpcError) as raised:
        system.sign(credential, petition_id)
    return rejection(raised.value)


def own_credential(system: SystemClient, key: ed25519.Ed25519PrivateKey, *, issued_ago: float, ttl: int) -> str:
    claims = SignerClaims(
        signer=uuid.uuid4().hex, method="oidc", assurance_level="dev", country="FR", territory="75", adult=True
    )
    token, _ = signer_credential.issue(key, claims, ttl, now=time.time() - issued_ago)
    return token


def identity_key(system: SystemClient) -> ed25519.Ed25519PrivateKey:
    path = next((system.namespace.secrets_dir / "identity-keys").glob("*.pem"))
    return signer_credential.load_private_key(path.read_bytes())


@pytest.mark.usefixtures("nothing_published")
def test_unknown_petition_is_not_found(system: SystemClient) -> None:
    credential = system.credential(f"u-{uuid.uuid4().hex[:8]}")
    assert sign_rejected(system, credential.token, "no-such-petition")[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "PETITION_NOT_FOUND",
    )


@pytest.mark.usefixtures("nothing_published")
def test_closed_and_draft_petitions_refuse_signatures(system: SystemClient) -> None:
    # Open to residents of Belgium only: until the close reaches signing
    # (within a second), this French signer is refused as NOT_ELIGIBLE, so
    # nothing is published either way.
    closed = system.create_petition("Closed one", eligibility=petition_pb2.Eligibility(countries=["BE"]))
    system.petitions.ClosePetition(
        petitions_pb2.ClosePetitionRequest(petition_id=closed.id, reason="closed for the test"),
        metadata=system.admin(),
        timeout=10,
    )
    draft = system.create_petition("Draft one", open_now=False)
    credential = system.credential(f"c-{uuid.uuid4().hex[:8]}")

    not_open = (grpc.StatusCode.FAILED_PRECONDITION, "PETITION_NOT_OPEN")
    for petition_id in (closed.id, draft.id):
        eventually(lambda p=petition_id: sign_rejected(system, credential.token, p)[:2] == not_open, 1, interval=0.02)  # type: ignore[misc]
    assert system.get_tally(closed.id).total == 0


@pytest.mark.usefixtures("nothing_published")
def test_expired_credential_is_unauthenticated(system: SystemClient) -> None:
    petition = system.create_petition("Expired credentials")
    expired = own_credential(system, identity_key(system), issued_ago=3600, ttl=600)
    assert sign_rejected(system, expired, petition.id)[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIAL_REJECTED",
    )


@pytest.mark.usefixtures("nothing_published")
def test_credential_signed_by_another_key_is_unauthenticated(system: SystemClient) -> None:
    petition = system.create_petition("Forged credentials")
    forged = own_credential(system, ed25519.Ed25519PrivateKey.generate(), issued_ago=0, ttl=600)
    genuine = system.credential(f"f-{uuid.uuid4().hex[:8]}").token
    header, _, signature = genuine.split(".")
    tampered_payload = f"{header}.{forged.split('.')[1]}.{signature}"

    for token in (forged, tampered_payload, "not-a-credential"):
        assert sign_rejected(system, token, petition.id)[:2] == (
            grpc.StatusCode.UNAUTHENTICATED,
            "CREDENTIAL_REJECTED",
        )


@pytest.mark.usefixtures("nothing_published")
def test_malformed_fields_name_the_field(system: SystemClient) -> None:
    credential = system.credential(f"m-{uuid.uuid4().hex[:8]}").token
    assert sign_rejected(system, credential, "Bad Id!") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["petition_id"],
    )
    assert sign_rejected(system, "", "some-petition") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["credential"],
    )


def test_tally_of_unknown_petition_is_not_found(system: SystemClient) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        system.tally.GetTally(tally_pb2.GetTallyRequest(petition_id="never-created"), timeout=10)
    assert rejection(raised.value)[:2] == (grpc.StatusCode.NOT_FOUND, "PETITION_NOT_FOUND")


@pytest.mark.usefixtures("nothing_published")
def test_invalid_utf8_is_an_invalid_argument(system: SystemClient) -> None:
    # petition_id (field 2) carrying bytes that are not UTF-8.
    raw = b"\x12\x03\xff\xfe\xfd"
    call = system.channels["signing"].unary_unary(
        "/petitions.v1.Signing/Sign", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as raised:
        call(raw, timeout=10)
    assert rejection(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")


@pytest.mark.usefixtures("nothing_published")
def test_petitions_outside_their_window_or_rules_refuse_signatures(system: SystemClient) -> None:
    now = time.time()

    def at(seconds: float) -> Timestamp:
        stamp = Timestamp()
        stamp.FromNanoseconds(int(seconds * 1e9))
        return stamp

    not_yet = system.create_petition("Opens tomorrow", opens_at=at(now + 86_400))
    belgians_only = system.create_petition("Belgians only", eligibility=petition_pb2.Eligibility(countries=["BE"]))
    adults_only = system.create_petition("Adults only", eligibility=petition_pb2.Eligibility(adults_only=True))
    credential = system.credential(f"w-{uuid.uuid4().hex[:8]}")  # anonymous mode: French, adulthood unknown

    assert sign_rejected(system, credential.token, not_yet.id)[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PETITION_NOT_OPEN",
    )
    for petition in (belgians_only, adults_only):
        assert sign_rejected(system, credential.token, petition.id)[:2] == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_ELIGIBLE",
        )
    with pytest.raises(grpc.RpcError) as raised:
        system.create_petition("Closed before it opens", closes_at=at(now - 1))
    assert rejection(raised.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["closes_at"])


@pytest.mark.usefixtures("nothing_published")
def test_oversized_fields_are_refused(system: SystemClient) -> None:
    assert sign_rejected(system, "x" * 5000, "some-petition") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["credential"],
    )
    with pytest.raises(grpc.RpcError) as raised:
        system.create_petition("t" * 201)
    assert rejection(raised.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["title"])


def test_sign_calls_are_limited_per_address_and_blocked_networks_refused(system: SystemClient) -> None:
    petition = system.create_petition("Limited")
    address = f"192.0.2.{uuid.uuid4().int % 200 + 20}"
    people = [system.credential(f"l-{uuid.uuid4().hex[:8]}").token for _ in range(6)]
    for token in people[:5]:
        system.sign(token, petition.id, client_ip=address)

    with pytest.raises(grpc.RpcError) as raised:
        system.sign(people[5], petition.id, client_ip=address)
    found = read_rejection(raised.value)
    assert (found.code, found.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert found.retry_after_seconds is not None

    with pytest.raises(grpc.RpcError) as raised:
        system.sign(people[5], petition.id, client_ip="203.0.113.50")
    assert rejection(raised.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "BLOCKED")

    # The refusals changed nothing: no claim was left behind, so the same
    # person signs at once from another address.
    other_address = f"198.51.100.{uuid.uuid4().int % 200 + 20}"
    assert (
        system.sign(people[5], petition.id, client_ip=other_address).outcome
        == signing_pb2.SignResponse.OUTCOME_ACCEPTED
    )
    assert system.settled_tally(petition.id).total == 6
