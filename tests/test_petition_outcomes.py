"""What parliament or government did with a petition, recorded by a clerk
through the Petitions gRPC service (issue 14, part 3's outcomes): a response
or a debate with its date, text and https links, appended to the petition
with the time it was recorded, and the state the state machine gives it (an
OPEN petition stays OPEN, signing goes on; a closed or classed one becomes
RESPONDED or DEBATED, DEBATED staying once a debate is on record). Every
refusal changes nothing, checked in the service, its audit trail and
petition-events."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import petition_pb2, petitions_pb2
from tests.clerk_checks import (
    NOT_CLERKS,
    Metadata,
    assert_unchanged,
    assign,
    audit_trail,
    caller,
    clerk,
    expected_refusal,
    read,
    refusal,
    snapshot,
)
from tests.system import SystemClient

RESPONSE = petition_pb2.Outcome.KIND_RESPONSE
DEBATE = petition_pb2.Outcome.KIND_DEBATE
SITTING = Timestamp(seconds=1_767_225_600)  # 2026-01-01T00:00:00Z


def _outcome(kind: petition_pb2.Outcome.Kind.ValueType = RESPONSE, **fields: object) -> petition_pb2.Outcome:
    values: dict[str, object] = {
        "kind": kind,
        "date": SITTING,
        "text": "The government responded:\nit will look into it.",
        "links": ["https://petition.parliament.uk/petitions/1/response", "https://video.parliament.uk/debate/1"],
    }
    values.update(fields)
    return petition_pb2.Outcome(**values)  # type: ignore[arg-type]


def _record(
    system: SystemClient, petition_id: str, outcome: petition_pb2.Outcome, metadata: Metadata | None = None
) -> petition_pb2.Petition:
    petition: petition_pb2.Petition = system.petitions.RecordOutcome(
        petitions_pb2.RecordOutcomeRequest(petition_id=petition_id, outcome=outcome),
        metadata=clerk(system) if metadata is None else metadata,
        timeout=10,
    )
    return petition


def _close(system: SystemClient, petition_id: str) -> petition_pb2.Petition:
    petition: petition_pb2.Petition = system.petitions.ClosePetition(
        petitions_pb2.ClosePetitionRequest(petition_id=petition_id, reason="period over"),
        metadata=clerk(system),
        timeout=10,
    )
    return petition


def test_a_response_on_an_open_petition_is_recorded_and_signing_goes_on(system: SystemClient) -> None:
    petition = system.create_petition("Outcome while open")
    asked = time.time()
    answered = _record(system, petition.id, _outcome())
    assert (answered.state, answered.version) == (petition_pb2.PETITION_STATE_OPEN, 2)
    [outcome] = answered.outcomes
    assert (outcome.kind, outcome.date, outcome.text, list(outcome.links)) == (
        RESPONSE,
        SITTING,
        "The government responded:\nit will look into it.",
        ["https://petition.parliament.uk/petitions/1/response", "https://video.parliament.uk/debate/1"],
    )
    assert asked - 1 <= outcome.recorded_at.ToNanoseconds() / 1e9 <= time.time() + 1
    assert read(system, petition.id) == answered
    entry = audit_trail(system, petition.id)[-1]
    assert (entry.action, entry.role, entry.state_before, entry.state_after) == (
        "respond",
        "clerk",
        petition_pb2.PETITION_STATE_OPEN,
        petition_pb2.PETITION_STATE_OPEN,
    )
    states = [
        petition_pb2.Petition.FromString(r.value)
        for r in system.records_with_key(petition.id.encode(), f"{system.namespace.topic_prefix}petition-state")
    ]
    assert states[-1] == answered


def test_a_closed_petition_is_responded_then_debated_and_a_later_response_keeps_it_debated(
    system: SystemClient,
) -> None:
    petition = system.create_petition("Outcomes after closing")
    _close(system, petition.id)
    responded = _record(system, petition.id, _outcome(RESPONSE, text="Response"))
    assert responded.state == petition_pb2.PETITION_STATE_RESPONDED
    debated = _record(system, petition.id, _outcome(DEBATE, text="Debate", links=["https://hansard.parliament.uk/1"]))
    assert debated.state == petition_pb2.PETITION_STATE_DEBATED
    later = _record(system, petition.id, _outcome(RESPONSE, text="Second response", links=[]))
    assert later.state == petition_pb2.PETITION_STATE_DEBATED
    assert [(o.kind, o.text) for o in later.outcomes] == [
        (RESPONSE, "Response"),
        (DEBATE, "Debate"),
        (RESPONSE, "Second response"),
    ]
    assert later.outcomes[:2] == debated.outcomes  # appended, never rewritten
    assert [(e.action, e.state_after) for e in audit_trail(system, petition.id)[-3:]] == [
        ("respond", petition_pb2.PETITION_STATE_RESPONDED),
        ("debate", petition_pb2.PETITION_STATE_DEBATED),
        ("respond", petition_pb2.PETITION_STATE_DEBATED),
    ]


def test_a_debate_on_a_classed_petition_makes_it_debated(system: SystemClient) -> None:
    petition = system.create_petition("Classed then debated")
    assign(system, petition.id, "lois")
    system.petitions.ClassPetition(
        petitions_pb2.ClassPetitionRequest(petition_id=petition.id, reason="classée"),
        metadata=clerk(system),
        timeout=10,
    )
    debated = _record(system, petition.id, _outcome(DEBATE))
    assert debated.state == petition_pb2.PETITION_STATE_DEBATED
    assert debated.closed_reason == "classée"


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        (_outcome(petition_pb2.Outcome.KIND_UNSPECIFIED), "outcome.kind"),
        (petition_pb2.Outcome(kind=RESPONSE, text="no date"), "outcome.date"),
        (_outcome(date=Timestamp(seconds=253_402_300_800)), "outcome.date"),
        (_outcome(text=""), "outcome.text"),
        (_outcome(text=" \n\t"), "outcome.text"),
        (_outcome(text="x" * 10_001), "outcome.text"),
        (_outcome(text="a\x00b"), "outcome.text"),
        (_outcome(links=["http://petition.parliament.uk/1"]), "outcome.links[0]"),
        (_outcome(links=["https://ok.example/1", "https://bad.example/a b"]), "outcome.links[1]"),
        (_outcome(links=["https://ok.example/1\n"]), "outcome.links[0]"),
        (_outcome(links=["javascript:alert(1)"]), "outcome.links[0]"),
        (_outcome(links=[f"https://ok.example/{i}" for i in range(11)]), "outcome.links"),
        (_outcome(recorded_at=SITTING), "outcome.recorded_at"),
    ],
    ids=[
        "no-kind",
        "no-date",
        "date-past-9999",
        "no-text",
        "blank-text",
        "long-text",
        "nul-in-text",
        "http-link",
        "space-in-link",
        "newline-after-link",
        "javascript-link",
        "too-many-links",
        "recorded-at-given",
    ],
)
def test_a_bad_outcome_is_refused_on_its_field_and_changes_nothing(
    system: SystemClient, outcome: petition_pb2.Outcome, field: str
) -> None:
    petition = system.create_petition("Bad outcome")
    before = snapshot(system, petition.id)
    refused = refusal(lambda: _record(system, petition.id, outcome))
    assert (refused.code, refused.reason, refused.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        [field],
    )
    assert_unchanged(system, before)


def test_an_outcome_needs_a_petition_in_front_of_parliament(system: SystemClient) -> None:
    draft = system.create_petition("Draft outcome", open_now=False)
    before = snapshot(system, draft.id)
    refused = refusal(lambda: _record(system, draft.id, _outcome()))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert "DRAFT" in refused.message
    assert_unchanged(system, before)
    missing = refusal(lambda: _record(system, "no-such-petition-here", _outcome()))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "PETITION_NOT_FOUND")


@pytest.mark.parametrize("kind", [RESPONSE, DEBATE], ids=["response", "debate"])
def test_only_a_clerk_records_an_outcome_and_every_refusal_changes_nothing(
    system: SystemClient, kind: petition_pb2.Outcome.Kind.ValueType
) -> None:
    petition = system.create_petition("Outcome roles")
    _close(system, petition.id)
    before = snapshot(system, petition.id)
    for who in NOT_CLERKS:
        refused = refusal(lambda: _record(system, petition.id, _outcome(kind), caller(system, who)))  # noqa: B023
        assert (refused.code, refused.reason) == expected_refusal(who), who
        assert read(system, petition.id) == before.petition, who
    assert_unchanged(system, before)
    # The same request from a clerk is taken: the refusals were the role's.
    assert _record(system, petition.id, _outcome(kind)).version == before.petition.version + 1
