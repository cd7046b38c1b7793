"""Moderation: invalidated signatures leave the count exactly once, and the
stored signature is marked, never deleted."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import jwt
import pytest

from petitions.v1 import events_pb2, signing_pb2
from tests.errors import rejection
from tests.stored_signatures import signer_row
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def invalidate(system: SystemClient, petition_id: str, **selector: object) -> int:
    reply = system.signing.InvalidateSignatures(
        signing_pb2.InvalidateSignaturesRequest(petition_id=petition_id, reason="test fraud", **selector),  # type: ignore[arg-type]
        metadata=system.admin(),
        timeout=30,
    )
    return int(reply.published)


def stored(system: SystemClient, petition_id: str, signer: str) -> tuple[bool, str]:
    row = signer_row(system.cassandra, petition_id, signer, "invalidated_at, ip_hash")
    if row is None:
        raise AssertionError("signature not stored")
    return row.invalidated_at is not None, row.ip_hash


def test_invalidations_count_once_and_mark_the_stored_signature(system: SystemClient) -> None:
    petition = system.create_petition("Moderated")
    alice, bob, carol = (
        system.credential(f"mod-{uuid.uuid4().hex[:8]}", territory=territory) for territory in ("13", "13", "75")
    )
    for person in (alice, bob):
        system.sign(person.token, petition.id)
    system.sign(carol.token, petition.id, client_ip="198.18.0.7")
    assert system.settled_tally(petition.id).total == 3

    assert invalidate(system, petition.id, signers=[alice.claims.signer]) == 1
    # The staff action is on record: who decided, and why.
    key = hashlib.sha256(f"{petition.id}\0{alice.claims.signer}".encode()).digest()
    events = [events_pb2.SignatureEvent.FromString(r.value) for r in system.records_with_key(key)]
    decided = [e.invalidated for e in events if e.HasField("invalidated")]
    staff = jwt.decode(system.staff_credential("staff-admin"), options={"verify_signature": False})
    assert [(d.invalidated_by, d.invalidated_by_name, d.reason) for d in decided] == [
        (staff["sub"], staff["nam"], "test fraud")
    ]
    assert invalidate(system, petition.id, signers=[alice.claims.signer]) == 1  # repeated: harmless
    tally = system.settled_tally(petition.id)
    assert (tally.total, dict(tally.by_territory)) == (2, {"13": 1, "75": 1})
    assert stored(system, petition.id, alice.claims.signer)[0] is True
    assert stored(system, petition.id, bob.claims.signer)[0] is False

    # Signing again does not bring an invalidated signature back.
    assert system.sign(alice.token, petition.id).outcome == signing_pb2.SignResponse.OUTCOME_ALREADY_SIGNED

    _, carol_ip_hash = stored(system, petition.id, carol.claims.signer)
    assert invalidate(system, petition.id, ip_hash=carol_ip_hash) == 1
    tally = system.settled_tally(petition.id)
    assert (tally.total, dict(tally.by_territory)) == (1, {"13": 1})


def test_invalidation_needs_the_admin_and_a_selector(system: SystemClient) -> None:
    petition = system.create_petition("Moderation rules")
    with pytest.raises(grpc.RpcError) as raised:
        system.signing.InvalidateSignatures(
            signing_pb2.InvalidateSignaturesRequest(petition_id=petition.id, reason="x", signers=["0" * 64]),
            timeout=10,
        )
    assert rejection(raised.value).code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as raised:
        invalidate(system, petition.id)
    assert (rejection(raised.value).code, rejection(raised.value).fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["signers"],
    )
    with pytest.raises(grpc.RpcError) as raised:
        invalidate(system, petition.id, signers=["not-a-pseudonym"])
    assert rejection(raised.value).fields == ["signers[0]"]
