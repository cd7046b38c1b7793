"""Clerks' committee work through the Petitions gRPC service (issue 14,
parts 6 to 8): the suggestion, assignment and reassignment with their
history, the rapporteur, classement, a committee's queue, who may do each,
and what the audit trail keeps of it. Every refusal is checked to change
nothing: the petition read back, its audit trail and petition-events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from petitions.v1 import petition_pb2, petitions_pb2
from services.petitions import committees
from tests.clerk_checks import (
    NOT_CLERKS,
    assert_unchanged,
    assign,
    audit_trail,
    caller,
    clerk,
    expected_refusal,
    read,
    refusal,
    snapshot,
    staff_member,
)
from tests.system import SystemClient

SCHOOLS_TITLE = "Plus d'enseignants dans les écoles"
SCHOOLS_TEXT = "Les élèves des collèges manquent de professeurs."


def _name_rapporteur(system: SystemClient, petition_id: str, rapporteur: str) -> petition_pb2.Petition:
    petition: petition_pb2.Petition = system.petitions.NameRapporteur(
        petitions_pb2.NameRapporteurRequest(petition_id=petition_id, rapporteur=rapporteur),
        metadata=clerk(system),
        timeout=10,
    )
    return petition


def _class(system: SystemClient, petition_id: str, reason: str) -> petition_pb2.Petition:
    petition: petition_pb2.Petition = system.petitions.ClassPetition(
        petitions_pb2.ClassPetitionRequest(petition_id=petition_id, reason=reason), metadata=clerk(system), timeout=10
    )
    return petition


# suggestion


@pytest.mark.parametrize("persona", ["staff-clerk", "staff-moderator-a", "staff-admin"])
def test_any_staff_role_gets_the_suggesters_proposals_with_their_explanation(
    system: SystemClient, persona: str
) -> None:
    petition = system.create_petition(SCHOOLS_TITLE, text=SCHOOLS_TEXT)
    reply = system.petitions.SuggestCommittee(
        petitions_pb2.SuggestCommitteeRequest(petition_id=petition.id), metadata=system.staff(persona), timeout=10
    )
    assert [(s.committee, s.score, list(s.explanation)) for s in reply.suggestions] == [
        (
            "affaires-culturelles",
            14.0,
            [
                "'écoles' in the title (weight x2): +6",
                "'enseignants' in the title (weight x2): +4",
                "'élèves' in the text: +2",
                "'collèges' in the text: +2",
            ],
        )
    ]
    # The service's answer is the packaged rules' (the file a clerk tunes).
    expected = committees.suggest(committees.load_committees(), SCHOOLS_TITLE, SCHOOLS_TEXT)
    assert [(s.committee, s.score, tuple(s.explanation)) for s in reply.suggestions] == [
        (s.committee, s.score, s.explanation) for s in expected
    ]
    # A proposal only: nothing is written.
    assert read(system, petition.id) == petition


def test_no_rule_matched_is_no_suggestion_and_an_unknown_petition_is_not_found(system: SystemClient) -> None:
    petition = system.create_petition("Zzz", text="qwerty")
    reply = system.petitions.SuggestCommittee(
        petitions_pb2.SuggestCommitteeRequest(petition_id=petition.id), metadata=clerk(system), timeout=10
    )
    assert list(reply.suggestions) == []
    missing = refusal(
        lambda: system.petitions.SuggestCommittee(
            petitions_pb2.SuggestCommitteeRequest(petition_id=f"nope-{uuid.uuid4().hex[:8]}"),
            metadata=clerk(system),
            timeout=10,
        )
    )
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "PETITION_NOT_FOUND")


@pytest.mark.parametrize(
    ("who", "code", "reason"),
    [
        ("author", grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE"),
        ("signer", grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE"),
        ("none", grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"),
    ],
)
def test_only_staff_get_suggestions(system: SystemClient, who: str, code: grpc.StatusCode, reason: str) -> None:
    petition = system.create_petition(SCHOOLS_TITLE, text=SCHOOLS_TEXT)
    refused = refusal(
        lambda: system.petitions.SuggestCommittee(
            petitions_pb2.SuggestCommitteeRequest(petition_id=petition.id), metadata=caller(system, who), timeout=10
        )
    )
    assert (refused.code, refused.reason) == (code, reason)


# assignment


def test_assignment_and_reassignment_keep_the_history_and_a_reassignment_clears_the_rapporteur(
    system: SystemClient,
) -> None:
    petition = system.create_petition(SCHOOLS_TITLE, text=SCHOOLS_TEXT)
    first = assign(system, petition.id, "affaires-culturelles", "suggested")
    assert (first.committee, first.version) == ("affaires-culturelles", 2)
    assert first.state == petition_pb2.PETITION_STATE_OPEN
    [entry] = first.assignments
    assert (entry.committee, entry.rapporteur, entry.assigned_by, entry.note) == (
        "affaires-culturelles",
        "",
        staff_member(system)[0],
        "suggested",
    )
    assert entry.assigned_at.seconds > 0

    named = _name_rapporteur(system, petition.id, "Mme Martin")
    assert named.rapporteur == "Mme Martin"
    assert named.assignments[-1].rapporteur == "Mme Martin"

    second = assign(system, petition.id, "affaires-sociales", "reassigned: teachers' pay is social affairs")
    assert (second.committee, second.rapporteur, second.version) == ("affaires-sociales", "", 4)
    assert [(a.committee, a.rapporteur, a.note) for a in second.assignments] == [
        ("affaires-culturelles", "Mme Martin", "suggested"),
        ("affaires-sociales", "", "reassigned: teachers' pay is social affairs"),
    ]
    assert second.assignments[0] == named.assignments[0]  # the history is never rewritten
    assert read(system, petition.id) == second


def test_assigning_to_the_committee_it_has_is_refused_and_changes_nothing(system: SystemClient) -> None:
    petition = system.create_petition(SCHOOLS_TITLE)
    assign(system, petition.id, "lois")
    before = snapshot(system, petition.id)
    refused = refusal(lambda: assign(system, petition.id, "lois", "again"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_ASSIGNED")
    assert "lois" in refused.message
    assert_unchanged(system, before)


@pytest.mark.parametrize(
    ("committee", "note", "code", "reason", "fields"),
    [
        ("commission-imaginaire", "", grpc.StatusCode.NOT_FOUND, "UNKNOWN_COMMITTEE", []),
        ("", "", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["committee"]),
        ("lois", "two\nlines", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["note"]),
        ("lois", "n" * 201, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["note"]),
    ],
    ids=["unknown-committee", "no-committee", "two-line-note", "long-note"],
)
def test_a_bad_assignment_is_refused_and_changes_nothing(
    system: SystemClient, committee: str, note: str, code: grpc.StatusCode, reason: str, fields: list[str]
) -> None:
    petition = system.create_petition(SCHOOLS_TITLE)
    before = snapshot(system, petition.id)
    refused = refusal(lambda: assign(system, petition.id, committee, note))
    assert (refused.code, refused.reason, refused.fields) == (code, reason, fields)
    assert_unchanged(system, before)


def test_assignment_needs_a_petition_in_front_of_parliament_and_the_version_decided_on(
    system: SystemClient,
) -> None:
    draft = system.create_petition("A draft", open_now=False)
    before = snapshot(system, draft.id)
    refused = refusal(lambda: assign(system, draft.id, "lois"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert "DRAFT" in refused.message
    assert_unchanged(system, before)

    petition = system.create_petition(SCHOOLS_TITLE)
    assign(system, petition.id, "lois", expected_version=1)
    before = snapshot(system, petition.id)
    stale = refusal(lambda: assign(system, petition.id, "finances", expected_version=1))
    assert (stale.code, stale.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_CONFLICT")
    assert_unchanged(system, before)

    missing = refusal(lambda: assign(system, f"nope-{uuid.uuid4().hex[:8]}", "lois"))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "PETITION_NOT_FOUND")


# rapporteur


def test_a_rapporteur_needs_a_committee_and_a_name_of_one_line(system: SystemClient) -> None:
    petition = system.create_petition(SCHOOLS_TITLE)
    before = snapshot(system, petition.id)
    refused = refusal(lambda: _name_rapporteur(system, petition.id, "Mme Martin"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_COMMITTEE")
    assert_unchanged(system, before)

    assign(system, petition.id, "lois")
    before = snapshot(system, petition.id)
    for bad in ("", "   ", "Mme\nMartin", "M" * 201):
        invalid = refusal(lambda: _name_rapporteur(system, petition.id, bad))  # noqa: B023 (called at once)
        assert (invalid.code, invalid.reason, invalid.fields) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ["rapporteur"],
        ), bad
    assert_unchanged(system, before)


# classement


def test_classement_files_an_open_petition_and_its_state_reaches_the_state_topic(system: SystemClient) -> None:
    petition = system.create_petition(SCHOOLS_TITLE)
    assign(system, petition.id, "affaires-culturelles")
    classed = _class(system, petition.id, "La commission a décidé de classer la pétition.\nVoir le rapport.")
    assert classed.state == petition_pb2.PETITION_STATE_CLASSED
    assert classed.closed_reason == "La commission a décidé de classer la pétition.\nVoir le rapport."
    assert classed.version == 3
    # Signing and tally learn it from the compacted state topic only.
    states = [
        petition_pb2.Petition.FromString(r.value)
        for r in system.records_with_key(petition.id.encode(), f"{system.namespace.topic_prefix}petition-state")
    ]
    assert states[-1] == classed

    before = snapshot(system, petition.id)
    again = refusal(lambda: _class(system, petition.id, "twice"))
    assert (again.code, again.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert "CLASSED" in again.message
    assert_unchanged(system, before)


@pytest.mark.parametrize(
    ("committee", "reason", "code", "error", "fields"),
    [
        ("", "filed", grpc.StatusCode.FAILED_PRECONDITION, "NO_COMMITTEE", []),
        ("lois", "", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["reason"]),
        ("lois", " \n ", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["reason"]),
        ("lois", "r" * 2001, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["reason"]),
        ("lois", "filed\x1b[2J", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["reason"]),
    ],
    ids=["no-committee", "no-reason", "blank-reason", "long-reason", "control-character"],
)
def test_a_bad_classement_is_refused_and_changes_nothing(
    system: SystemClient, committee: str, reason: str, code: grpc.StatusCode, error: str, fields: list[str]
) -> None:
    petition = system.create_petition(SCHOOLS_TITLE)
    if committee:
        assign(system, petition.id, committee)
    before = snapshot(system, petition.id)
    refused = refusal(lambda: _class(system, petition.id, reason))
    assert (refused.code, refused.reason, refused.fields) == (code, error, fields)
    assert_unchanged(system, before)


def test_only_an_open_petition_is_classed(system: SystemClient) -> None:
    petition = system.create_petition(SCHOOLS_TITLE)
    assign(system, petition.id, "lois")
    system.petitions.ClosePetition(
        petitions_pb2.ClosePetitionRequest(petition_id=petition.id, reason="closed early"),
        metadata=clerk(system),
        timeout=10,
    )
    before = snapshot(system, petition.id)
    refused = refusal(lambda: _class(system, petition.id, "filed"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert "CLOSED" in refused.message
    assert_unchanged(system, before)


# a committee's queue


def _queue(system: SystemClient, committee: str) -> list[petition_pb2.Petition]:
    found: list[petition_pb2.Petition] = []
    token = ""
    while True:
        page = system.petitions.ListPetitions(
            petitions_pb2.ListPetitionsRequest(committee=committee, page_size=100, page_token=token), timeout=10
        )
        found += page.petitions
        token = page.next_page_token
        if not token:
            return found


def test_a_committees_queue_lists_the_petitions_assigned_to_it(system: SystemClient) -> None:
    laws = [system.create_petition(f"Queue lois {i}") for i in range(2)]
    finance = system.create_petition("Queue finances")
    for petition in laws:
        assign(system, petition.id, "lois")
    assign(system, finance.id, "finances")

    queue = _queue(system, "lois")
    assert {p.committee for p in queue} == {"lois"}
    ids = [p.id for p in queue]
    assert {p.id for p in laws} <= set(ids)
    assert finance.id not in ids

    # A reassignment moves the petition to the other committee's queue.
    assign(system, laws[0].id, "finances", "reassigned")
    assert laws[0].id not in [p.id for p in _queue(system, "lois")]
    assert {laws[0].id, finance.id} <= {p.id for p in _queue(system, "finances")}


# who may do it


def _clerk_calls(system: SystemClient, petition_id: str) -> dict[str, Callable[[Any], Any]]:
    """Each clerk RPC with a request that a clerk would have had accepted."""
    return {
        "AssignCommittee": lambda metadata: system.petitions.AssignCommittee(
            petitions_pb2.AssignCommitteeRequest(petition_id=petition_id, committee="finances"),
            metadata=metadata,
            timeout=10,
        ),
        "NameRapporteur": lambda metadata: system.petitions.NameRapporteur(
            petitions_pb2.NameRapporteurRequest(petition_id=petition_id, rapporteur="M. Durand"),
            metadata=metadata,
            timeout=10,
        ),
        "ClassPetition": lambda metadata: system.petitions.ClassPetition(
            petitions_pb2.ClassPetitionRequest(petition_id=petition_id, reason="filed"),
            metadata=metadata,
            timeout=10,
        ),
    }


@pytest.mark.parametrize("rpc", ["AssignCommittee", "NameRapporteur", "ClassPetition"])
def test_only_a_clerk_does_committee_work_and_every_refusal_changes_nothing(system: SystemClient, rpc: str) -> None:
    petition = system.create_petition(SCHOOLS_TITLE)
    assign(system, petition.id, "lois")
    call = _clerk_calls(system, petition.id)[rpc]
    before = snapshot(system, petition.id)
    for who in NOT_CLERKS:
        refused = refusal(lambda: call(caller(system, who)))  # noqa: B023 (called at once)
        assert (refused.code, refused.reason) == expected_refusal(who), who
        assert read(system, petition.id) == before.petition, who
    assert_unchanged(system, before)
    # The same request from a clerk is taken: the refusals were the role's.
    assert call(clerk(system)).version == before.petition.version + 1


# the audit trail


def test_the_audit_trail_records_each_clerks_act_with_its_role_and_the_committee_before_and_after(
    system: SystemClient,
) -> None:
    petition = system.create_petition(SCHOOLS_TITLE, text=SCHOOLS_TEXT)
    assign(system, petition.id, "affaires-culturelles", "suggested")
    assign(system, petition.id, "affaires-sociales", "reassigned: pay")
    _name_rapporteur(system, petition.id, "Mme Martin")
    _class(system, petition.id, "classée")
    final = system.petitions.RecordOutcome(
        petitions_pb2.RecordOutcomeRequest(
            petition_id=petition.id,
            outcome=petition_pb2.Outcome(
                kind=petition_pb2.Outcome.KIND_RESPONSE,
                date=petition.created_at,
                text="The committee's report",
                links=["https://www.assemblee-nationale.fr/rapport"],
            ),
        ),
        metadata=clerk(system),
        timeout=10,
    )
    assert final.state == petition_pb2.PETITION_STATE_RESPONDED

    trail = audit_trail(system, petition.id)
    clerk_id, clerk_name = staff_member(system)
    assert [(e.version, e.action, e.role, e.actor, e.reason) for e in trail] == [
        (1, "create", "administrator", staff_member(system, "staff-admin")[0], ""),
        (2, "assign", "clerk", clerk_id, "suggested"),
        (3, "assign", "clerk", clerk_id, "reassigned: pay"),
        (4, "rapporteur", "clerk", clerk_id, ""),
        (5, "class", "clerk", clerk_id, "classée"),
        (6, "respond", "clerk", clerk_id, ""),
    ]
    assert {e.actor_name for e in trail[1:]} == {clerk_name}
    first, second, rapporteur, classed, outcome = trail[1:]
    assert "committee" not in first.before
    assert first.after["committee"] == '"affaires-culturelles"'
    assert (second.before["committee"], second.after["committee"]) == (
        '"affaires-culturelles"',
        '"affaires-sociales"',
    )
    assert '"affaires-culturelles"' in second.after["assignments"]
    assert '"affaires-sociales"' in second.after["assignments"]
    assert rapporteur.after["rapporteur"] == '"Mme Martin"'
    assert "rapporteur" not in rapporteur.before
    assert (classed.state_before, classed.state_after) == (
        petition_pb2.PETITION_STATE_OPEN,
        petition_pb2.PETITION_STATE_CLASSED,
    )
    assert classed.after["closedReason"] == '"classée"'
    assert (outcome.state_before, outcome.state_after) == (
        petition_pb2.PETITION_STATE_CLASSED,
        petition_pb2.PETITION_STATE_RESPONDED,
    )
    assert "outcomes" in outcome.after
    assert "outcomes" not in outcome.before
    assert [(a.committee, a.rapporteur, a.assigned_by) for a in final.assignments] == [
        ("affaires-culturelles", "", clerk_id),
        ("affaires-sociales", "Mme Martin", clerk_id),
    ]
