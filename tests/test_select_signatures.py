"""Tally.SelectSignatures: the stored signatures a moderation selection
names, asked of the tally that owns them (signing no longer reads the
tally's table). It names signers, so only an administrator may call it."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import signing_pb2, tally_pb2
from tests.errors import rejection
from tests.staff_tokens import bearer, staff_token
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def select(
    system: SystemClient, metadata: tuple[tuple[str, str | bytes], ...], petition_id: str, **selector: object
) -> list[tally_pb2.StoredSignature]:
    reply = system.tally.SelectSignatures(
        tally_pb2.SelectSignaturesRequest(petition_id=petition_id, **selector),  # type: ignore[arg-type]
        metadata=metadata,
        timeout=30,
    )
    return list(reply.signatures)


def at(seconds: float) -> Timestamp:
    return at_ns(int(seconds * 1e9))


def at_ns(nanoseconds: int) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(nanoseconds)
    return value


def test_select_signatures_needs_an_administrator(system: SystemClient) -> None:
    petition_id = f"sel-{uuid.uuid4().hex[:10]}"
    signer = system.credential(f"sel-{uuid.uuid4().hex[:8]}").token
    cases = {
        "no credential": ((), (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REQUIRED")),
        "a plain token": (bearer("s3cr3t"), (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REJECTED")),
        "a signer's": (bearer(signer), (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")),
        "a clerk's": (
            bearer(staff_token(system.namespace, "clerk", "moderator")),
            (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE"),
        ),
    }
    seen = {}
    for name, (metadata, _) in cases.items():
        with pytest.raises(grpc.RpcError) as raised:
            select(system, metadata, petition_id, ip_hash="0" * 32)
        seen[name] = (rejection(raised.value).code, rejection(raised.value).reason)
    assert seen == {name: expected for name, (_, expected) in cases.items()}

    # An administrator is answered (nothing stored for this id), and a
    # selection without any selector is refused by name.
    assert select(system, system.admin(), petition_id, ip_hash="0" * 32) == []
    with pytest.raises(grpc.RpcError) as raised:
        select(system, system.admin(), petition_id)
    assert (rejection(raised.value).code, rejection(raised.value).fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["signers"],
    )


def test_select_signatures_by_signers_ip_hash_and_window(system: SystemClient) -> None:
    petition = system.create_petition("Selected")
    alice, bob, carol = (system.credential(f"sel-{uuid.uuid4().hex[:8]}") for _ in range(3))
    signed_at = {}
    for person, ip in ((alice, ""), (bob, ""), (carol, "198.18.0.9")):
        signed_at[person.claims.signer] = system.sign(person.token, petition.id, client_ip=ip).signed_at
    assert system.settled_tally(petition.id).total == 3
    admin = system.admin()
    everyone = sorted(p.claims.signer for p in (alice, bob, carol))

    # By signers: the stored ones, as stored, sorted by signer.
    stored = select(system, admin, petition.id, signers=[*everyone, "e" * 64])
    assert [s.signer for s in stored] == everyone
    by_signer = {s.signer: s for s in stored}
    for signer, when in signed_at.items():
        assert abs(by_signer[signer].signed_at.ToNanoseconds() - when.ToNanoseconds()) < 2_000_000  # Cassandra: ms

    # By IP hash: carol's address only.
    carol_hash = by_signer[carol.claims.signer].ip_hash
    assert [s.signer for s in select(system, admin, petition.id, ip_hash=carol_hash)] == [carol.claims.signer]

    # By a window from before alice's signature to before bob's: alice only
    # (half a millisecond off each, as Cassandra keeps milliseconds, so no
    # bound falls on a stored time).
    first = by_signer[alice.claims.signer].signed_at.ToNanoseconds()
    second = by_signer[bob.claims.signer].signed_at.ToNanoseconds()
    assert second - first >= 1_000_000
    window = select(
        system, admin, petition.id, signed_after=at_ns(first - 500_000), signed_before=at_ns(second - 500_000)
    )
    assert [s.signer for s in window] == [alice.claims.signer]
    assert (
        select(system, admin, petition.id, signed_after=at(time.time() + 60), signed_before=at(time.time() + 120)) == []
    )

    # An invalidated signature is no longer selected.
    system.signing.InvalidateSignatures(
        signing_pb2.InvalidateSignaturesRequest(petition_id=petition.id, signers=[alice.claims.signer], reason="fraud"),
        metadata=admin,
        timeout=30,
    )
    assert system.settled_tally(petition.id).total == 2
    assert [s.signer for s in select(system, admin, petition.id, signers=everyone)] == sorted(
        p.claims.signer for p in (bob, carol)
    )
