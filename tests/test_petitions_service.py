"""The petitions service's own surface: direct creation by an
administrator, reads, closing, the audit trail, and what each change
publishes (one PetitionChanged on petition-events, the whole petition on the
compacted petition-state topic)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from petitions.v1 import events_pb2, petition_pb2, petitions_pb2
from tests.errors import rejection
from tests.system import SystemClient


def _code_and_reason(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    refused = rejection(error)
    return refused.code, refused.reason


def test_an_administrator_creates_reads_and_closes_a_petition_and_each_change_is_audited_and_published(
    system: SystemClient,
) -> None:
    petition = system.create_petition("Service surface", text="Body", author_name="Marie D.")
    assert petition.state == petition_pb2.PETITION_STATE_OPEN
    assert petition.version == 1
    assert petition.type == "assemblee"
    read = system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition.id), timeout=10)
    assert read == petition

    closed = system.petitions.ClosePetition(
        petitions_pb2.ClosePetitionRequest(petition_id=petition.id, reason="withdrawn by its author"),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )
    assert (closed.state, closed.version, closed.closed_reason) == (
        petition_pb2.PETITION_STATE_CLOSED,
        2,
        "withdrawn by its author",
    )

    trail = system.petitions.GetAuditTrail(
        petitions_pb2.GetAuditTrailRequest(petition_id=petition.id),
        metadata=system.staff("staff-moderator-a"),
        timeout=10,
    )
    assert [(e.version, e.action, e.role) for e in trail.entries] == [
        (1, "create", "administrator"),
        (2, "close", "clerk"),
    ]
    close = trail.entries[1]
    assert (close.state_before, close.state_after) == (
        petition_pb2.PETITION_STATE_OPEN,
        petition_pb2.PETITION_STATE_CLOSED,
    )
    assert close.reason == "withdrawn by its author"
    assert "closedReason" in close.after
    assert "closedReason" not in close.before

    events = [
        events_pb2.PetitionEvent.FromString(r.value)
        for r in system.records_with_key(petition.id.encode(), f"{system.namespace.topic_prefix}petition-events")
    ]
    assert [(e.changed.entry.version, e.changed.entry.action) for e in events if e.HasField("changed")] == [
        (1, "create"),
        (2, "close"),
    ]
    states = [
        petition_pb2.Petition.FromString(r.value)
        for r in system.records_with_key(petition.id.encode(), f"{system.namespace.topic_prefix}petition-state")
    ]
    assert [s.version for s in states] == [1, 2]
    assert states[-1] == closed


def test_closing_twice_names_the_state_and_changes_nothing(system: SystemClient) -> None:
    petition = system.create_petition("Closed twice")
    request = petitions_pb2.ClosePetitionRequest(petition_id=petition.id, reason="done")
    system.petitions.ClosePetition(request, metadata=system.staff("staff-clerk"), timeout=10)
    with pytest.raises(grpc.RpcError) as raised:
        system.petitions.ClosePetition(request, metadata=system.staff("staff-clerk"), timeout=10)
    refused = rejection(raised.value)
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert "CLOSED" in refused.message
    read = system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition.id), timeout=10)
    assert read.version == 2


@pytest.mark.parametrize(
    ("persona", "code", "reason"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"),
        ("staff-moderator-a", grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE"),
        ("staff-clerk", grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE"),
    ],
)
def test_only_an_administrator_creates_petitions_directly(
    system: SystemClient, persona: str | None, code: grpc.StatusCode, reason: str
) -> None:
    petition_id = f"r-{uuid.uuid4().hex[:10]}"
    metadata = system.staff(persona) if persona else ()
    with pytest.raises(grpc.RpcError) as raised:
        system.petitions.CreatePetition(
            petitions_pb2.CreatePetitionRequest(id=petition_id, title="Nope", open=True), metadata=metadata, timeout=10
        )
    assert _code_and_reason(raised.value) == (code, reason)
    with pytest.raises(grpc.RpcError) as missing:
        system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition_id), timeout=10)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_signer_credential_is_not_a_staff_credential(system: SystemClient) -> None:
    signer = system.credential(f"p-{uuid.uuid4().hex[:8]}").token
    with pytest.raises(grpc.RpcError) as raised:
        system.petitions.CreatePetition(
            petitions_pb2.CreatePetitionRequest(title="Nope", open=True),
            metadata=(("authorization", f"Bearer {signer}"),),
            timeout=10,
        )
    assert _code_and_reason(raised.value) == (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")
    with pytest.raises(grpc.RpcError) as forged:
        system.petitions.CreatePetition(
            petitions_pb2.CreatePetitionRequest(title="Nope", open=True),
            metadata=(("authorization", "Bearer not.a.credential"),),
            timeout=10,
        )
    assert _code_and_reason(forged.value) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REJECTED")
