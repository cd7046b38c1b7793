"""Authors, drafts and "nothing changed" checks for the tests of the
petitions service's authoring, admissibility and legislature RPCs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest

from petitions.v1 import identity_pb2, petition_pb2, petitions_pb2
from tests.errors import rejection
from tests.system import SystemClient

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class Author:
    token: str
    pseudonym: str
    display_name: str

    @property
    def metadata(self) -> Metadata:
        return bearer(self.token)


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def author(system: SystemClient, persona: str = "") -> Author:
    """An author credential for an identified adult persona (a new one by
    default), from identity's ExchangeAuthorIdToken."""
    persona = persona or f"author-{uuid.uuid4().hex[:8]}"
    reply = system.author_credential(persona, birthdate="1990-01-01")
    return Author(reply.token, reply.author, reply.display_name)


def same_person_as_signer(system: SystemClient, persona: str) -> identity_pb2.SignerCredential:
    """A signer credential of the person behind author(system, persona)
    (same provider, same subject: the same pseudonym)."""
    return system.exchange(system.id_token(persona, identified=True, published_name=True))


def draft(
    system: SystemClient, writer: Author, petition_type: str = "assemblee", **fields: str
) -> petition_pb2.Petition:
    reply: petition_pb2.Petition = system.petitions.CreateDraft(
        petitions_pb2.CreateDraftRequest(
            id=fields.pop("id", f"d-{uuid.uuid4().hex[:12]}"),
            type=petition_type,
            title=fields.pop("title", "Plant trees along every national road"),
            text=fields.pop("text", "Shade, wildlife and cleaner air."),
        ),
        metadata=writer.metadata,
        timeout=10,
    )
    return reply


def submit(system: SystemClient, writer: Author, petition_id: str) -> petition_pb2.Petition:
    reply: petition_pb2.Petition = system.petitions.SubmitPetition(
        petitions_pb2.SubmitPetitionRequest(petition_id=petition_id), metadata=writer.metadata, timeout=10
    )
    return reply


def submitted(system: SystemClient, petition_type: str = "assemblee", **fields: str) -> petition_pb2.Petition:
    """A petition in the moderators' queue (a type without sponsors)."""
    writer = author(system)
    return submit(system, writer, draft(system, writer, petition_type, **fields).id)


def stored(system: SystemClient, petition_id: str) -> petition_pb2.Petition:
    """The petition as the service has it (staff see unpublished ones)."""
    reply: petition_pb2.Petition = system.petitions.GetPetition(
        petitions_pb2.GetPetitionRequest(petition_id=petition_id), metadata=system.staff("staff-clerk"), timeout=10
    )
    return reply


def audit(system: SystemClient, petition_id: str) -> list[petitions_pb2.AuditEntry]:
    return list(
        system.petitions.GetAuditTrail(
            petitions_pb2.GetAuditTrailRequest(petition_id=petition_id),
            metadata=system.staff("staff-moderator-a"),
            timeout=10,
        ).entries
    )


def events(system: SystemClient, petition_id: str) -> list[petitions_pb2.AuditEntry]:
    """The PetitionChanged entries on petition-events for the petition."""
    from petitions.v1 import events_pb2

    found = []
    for record in system.records_with_key(petition_id.encode(), f"{system.namespace.topic_prefix}petition-events"):
        event = events_pb2.PetitionEvent.FromString(record.value)
        if event.HasField("changed"):
            found.append(event.changed.entry)
    return found


@dataclass(frozen=True)
class Refusal:
    name: str
    call: Callable[[], object]
    code: grpc.StatusCode
    reason: str


def assert_refusals_change_nothing(system: SystemClient, petition_ids: list[str], refusals: list[Refusal]) -> None:
    """Each call is refused as stated, and neither the petitions (version,
    audit trail) nor petition-events show any change."""
    before = {p: (stored(system, p), len(audit(system, p))) for p in petition_ids}
    published = {p: len(events(system, p)) for p in petition_ids}
    for refusal in refusals:
        with pytest.raises(grpc.RpcError) as raised:
            refusal.call()
        refused = rejection(raised.value)
        assert (refused.code, refused.reason) == (refusal.code, refusal.reason), (refusal.name, refused.message)
        for petition_id, (petition, trail_length) in before.items():
            assert stored(system, petition_id) == petition, refusal.name
            assert len(audit(system, petition_id)) == trail_length, refusal.name
    assert {p: len(events(system, p)) for p in petition_ids} == published
