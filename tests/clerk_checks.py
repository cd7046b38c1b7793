"""What the clerks' tests share: the callers of every kind, and the check
that a refused call changed nothing, read back from the service, its audit
trail and the petition-events topic."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest

from petitions.v1 import petition_pb2, petitions_pb2
from tests.errors import Rejection, rejection
from tests.system import SystemClient

Metadata = tuple[tuple[str, str | bytes], ...]


def author_metadata(system: SystemClient, persona: str = "") -> Metadata:
    """An author credential's metadata, from identity."""
    return system.author(persona or f"author-{uuid.uuid4().hex[:8]}")


def signer_metadata(system: SystemClient) -> Metadata:
    """A valid signer credential, sent where a staff one is expected."""
    return (("authorization", f"Bearer {system.credential(f's-{uuid.uuid4().hex[:8]}').token}"),)


# Every caller a clerk's call must refuse, with the documented answer: the
# other staff roles and credential kinds are PERMISSION_DENIED WRONG_ROLE,
# no credential at all is UNAUTHENTICATED CREDENTIAL_REQUIRED.
NOT_CLERKS = ["staff-moderator-a", "staff-admin", "author", "signer", "none"]


def caller(system: SystemClient, who: str) -> Metadata:
    if who == "author":
        return author_metadata(system)
    if who == "signer":
        return signer_metadata(system)
    if who == "none":
        return ()
    return system.staff(who)


def expected_refusal(who: str) -> tuple[grpc.StatusCode, str]:
    if who == "none":
        return grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"
    return grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE"


def refusal(call: Callable[[], Any]) -> Rejection:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return rejection(raised.value)


def staff_member(system: SystemClient, persona: str = "staff-clerk") -> tuple[str, str]:
    """The pseudonym and name a staff persona's credential carries (what
    the audit trail and the assignment history must say), read from the
    credential identity issued; its signature is the service's to check."""
    claims = jwt.decode(system.staff_credential(persona), options={"verify_signature": False})
    return str(claims["sub"]), str(claims.get("nam", ""))


def clerk(system: SystemClient) -> Metadata:
    return system.staff("staff-clerk")


def read(system: SystemClient, petition_id: str) -> petition_pb2.Petition:
    """The petition as the service has it (staff may read any state)."""
    petition: petition_pb2.Petition = system.petitions.GetPetition(
        petitions_pb2.GetPetitionRequest(petition_id=petition_id), metadata=clerk(system), timeout=10
    )
    return petition


def audit_trail(system: SystemClient, petition_id: str) -> list[petitions_pb2.AuditEntry]:
    reply: petitions_pb2.GetAuditTrailResponse = system.petitions.GetAuditTrail(
        petitions_pb2.GetAuditTrailRequest(petition_id=petition_id), metadata=clerk(system), timeout=10
    )
    return list(reply.entries)


def petition_events(system: SystemClient, petition_id: str) -> int:
    """How many records the petition has on petition-events."""
    topic = f"{system.namespace.topic_prefix}petition-events"
    return len(system.records_with_key(petition_id.encode(), topic))


@dataclass(frozen=True)
class Snapshot:
    petition: petition_pb2.Petition
    audit_entries: int
    events: int


def snapshot(system: SystemClient, petition_id: str) -> Snapshot:
    return Snapshot(
        read(system, petition_id), len(audit_trail(system, petition_id)), petition_events(system, petition_id)
    )


def assert_unchanged(system: SystemClient, before: Snapshot) -> None:
    """The petition (every field, its version too), its audit trail and its
    events are as they were."""
    petition_id = before.petition.id
    assert read(system, petition_id) == before.petition
    assert len(audit_trail(system, petition_id)) == before.audit_entries
    assert petition_events(system, petition_id) == before.events


def assign(
    system: SystemClient, petition_id: str, committee: str, note: str = "", expected_version: int = 0
) -> petition_pb2.Petition:
    petition: petition_pb2.Petition = system.petitions.AssignCommittee(
        petitions_pb2.AssignCommitteeRequest(
            petition_id=petition_id, committee=committee, note=note, expected_version=expected_version
        ),
        metadata=clerk(system),
        timeout=10,
    )
    return petition
