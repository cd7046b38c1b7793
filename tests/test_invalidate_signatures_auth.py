"""InvalidateSignatures needs a staff credential with the administrator role
(the shared admin token is gone): every other caller is refused with the
documented status and reason, and nothing is published.

Staff and author credentials are minted with identity's own key
(tests/staff_tokens.py), so each kind and role can be had without a
provider persona for it; signing verifies them through the keys identity
publishes, as it verifies issued ones."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from petitions.v1 import events_pb2, signing_pb2
from servicekit import role_credentials
from services.signing.publisher import signature_key
from tests.errors import rejection
from tests.staff_tokens import bearer, identity_key, staff_token
from tests.system import SystemClient

pytestmark = pytest.mark.stack

SIGNER = "ab" * 32


def staff(system: SystemClient, *roles: str, ttl: int = 300, now: float | None = None) -> str:
    return staff_token(system.namespace, *roles, ttl=ttl, now=now)


def invalidate(petition_id: str) -> signing_pb2.InvalidateSignaturesRequest:
    return signing_pb2.InvalidateSignaturesRequest(petition_id=petition_id, signers=[SIGNER], reason="fraud")


def refused(system: SystemClient, petition_id: str, metadata: tuple[tuple[str, str], ...]) -> tuple[object, str]:
    with pytest.raises(grpc.RpcError) as raised:
        system.signing.InvalidateSignatures(invalidate(petition_id), metadata=metadata, timeout=10)
    found = rejection(raised.value)
    return found.code, found.reason


def test_only_an_administrator_may_invalidate_signatures(system: SystemClient) -> None:
    petition_id = f"inv-{uuid.uuid4().hex[:10]}"
    author, _ = role_credentials.issue_author(
        identity_key(system.namespace), "author-" + uuid.uuid4().hex, "Marie D.", 300
    )
    forger = ed25519.Ed25519PrivateKey.generate()
    forged, _ = role_credentials.issue_staff(forger, "staff-x", "Forger", frozenset({"administrator"}), 300)
    expired = staff(system, "administrator", ttl=60, now=time.time() - 3600)
    signer = system.credential(f"inv-{uuid.uuid4().hex[:8]}").token

    cases = {
        "no metadata": ((), (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REQUIRED")),
        "not a bearer": ((("authorization", "Basic eDp5"),), (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REQUIRED")),
        # What the shared admin token was: a secret string, no credential.
        "a plain token": (bearer("s3cr3t-admin-token"), (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REJECTED")),
        "forged": (bearer(forged), (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REJECTED")),
        "expired": (bearer(expired), (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REJECTED")),
        "a signer's": (bearer(signer), (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")),
        "an author's": (bearer(author), (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")),
        "a moderator's": (bearer(staff(system, "moderator")), (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")),
        "a clerk's": (bearer(staff(system, "clerk", "moderator")), (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")),
    }
    before = system.end_offsets()
    seen = {name: refused(system, petition_id, metadata) for name, (metadata, _) in cases.items()}
    assert seen == {name: expected for name, (_, expected) in cases.items()}
    # A refusal publishes nothing (tests of a session run one at a time).
    assert system.end_offsets() == before

    reply = system.signing.InvalidateSignatures(
        invalidate(petition_id), metadata=bearer(staff(system, "clerk", "administrator")), timeout=10
    )
    assert reply.published == 1
    [record] = system.records_with_key(signature_key(petition_id, SIGNER))
    assert events_pb2.SignatureEvent.FromString(record.value).invalidated.signer == SIGNER
