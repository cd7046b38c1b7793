"""Open data of the petitions themselves (`petitions open-data --metadata`,
services/petitions/open_data.py): each published petition's metadata,
state, committee, rapporteur, rejection and outcomes, in the shape of the UK
Parliament's petition JSON, read through the Petitions service as the public
reads it (no draft, no pseudonym)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import identity_pb2, petition_pb2, petitions_pb2
from services.petitions import open_data
from tests.harness import run_cli
from tests.system import SystemClient


def _stamp(seconds: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromSeconds(seconds)
    return stamp


def _full_petition() -> petition_pb2.Petition:
    petition = petition_pb2.Petition(
        id="p-climate",
        title="Climate now",
        text="Act.\nNow.",
        author="9f2c-author-pseudonym",
        author_name="Marie D.",
        state=petition_pb2.PETITION_STATE_DEBATED,
        thresholds=[
            petition_pb2.Threshold(id="committee", label="Examined", signatures=100_000),
            petition_pb2.Threshold(id="plenary", label="Plenary", signatures=500_000, min_territories=30),
        ],
        committee="lois",
        eligibility=petition_pb2.Eligibility(
            adults_only=True, methods=[identity_pb2.VERIFICATION_METHOD_OIDC], countries=["FR"]
        ),
        type="assemblee",
        legislature="17",
        rapporteur="Mme Martin",
        version=9,
        closed_reason="Classée",
        assignments=[
            petition_pb2.CommitteeAssignment(
                committee="finances", assigned_by="staff-pseudonym-1", note="suggested", assigned_at=_stamp(1000)
            ),
            petition_pb2.CommitteeAssignment(
                committee="lois",
                rapporteur="Mme Martin",
                assigned_by="staff-pseudonym-2",
                note="reassigned",
                assigned_at=_stamp(2000),
            ),
        ],
        outcomes=[
            petition_pb2.Outcome(
                kind=petition_pb2.Outcome.KIND_RESPONSE,
                date=_stamp(86_400),
                text="The response.",
                links=["https://example.org/r"],
                recorded_at=_stamp(90_000),
            ),
            petition_pb2.Outcome(kind=petition_pb2.Outcome.KIND_DEBATE, date=_stamp(172_800), text="Debated."),
        ],
    )
    petition.created_at.FromSeconds(10)
    petition.opens_at.FromSeconds(20)
    return petition


def test_a_petition_is_a_json_api_resource_with_its_metadata_committee_and_outcomes() -> None:
    resource = open_data.as_resource(_full_petition(), committees={"lois": "Commission des lois", "finances": "F"})
    assert (resource["id"], resource["type"]) == ("p-climate", "petition")
    attributes = resource["attributes"]
    assert attributes["title"] == "Climate now"
    assert attributes["creator_name"] == "Marie D."
    assert (attributes["state"], attributes["petition_type"], attributes["legislature"]) == (
        "debated",
        "assemblee",
        "17",
    )
    assert attributes["committee"] == {"id": "lois", "name": "Commission des lois"}
    assert attributes["rapporteur"] == "Mme Martin"
    assert [h["committee"]["id"] for h in attributes["committee_history"]] == ["finances", "lois"]
    assert attributes["committee_history"][0]["assigned_at"] == "1970-01-01T00:16:40Z"
    assert attributes["outcomes"] == [
        {
            "kind": "response",
            "date": "1970-01-02T00:00:00Z",
            "text": "The response.",
            "links": ["https://example.org/r"],
            "recorded_at": "1970-01-02T01:00:00Z",
        },
        {"kind": "debate", "date": "1970-01-03T00:00:00Z", "text": "Debated.", "links": [], "recorded_at": None},
    ]
    assert attributes["thresholds"][1] == {
        "id": "plenary",
        "label": "Plenary",
        "signatures": 500_000,
        "min_territories": 30,
    }
    assert attributes["eligibility"] == {
        "countries": ["FR"],
        "adults_only": True,
        "methods": ["oidc"],
        "accept_declared_adults": False,
    }
    assert (attributes["created_at"], attributes["opens_at"], attributes["closes_at"]) == (
        "1970-01-01T00:00:10Z",
        "1970-01-01T00:00:20Z",
        None,
    )
    assert attributes["rejection"] is None
    # Pseudonyms (the author's, the clerks') are not open data.
    published = json.dumps(resource)
    assert "pseudonym" not in published
    assert open_data.document(_full_petition()) == {"data": open_data.as_resource(_full_petition())}


def test_a_rejection_is_published_with_its_code_label_and_the_petition_it_duplicates() -> None:
    petition = petition_pb2.Petition(
        id="p-again",
        title="Again",
        state=petition_pb2.PETITION_STATE_REJECTED,
        rejection=petition_pb2.Rejection(reason_code="duplicate", explanation="Already there.", duplicate_of="p-1"),
    )
    resource = open_data.as_resource(petition, rejection_reasons={"duplicate": "Duplicate of an existing petition"})
    assert resource["attributes"]["rejection"] == {
        "code": "duplicate",
        "label": "Duplicate of an existing petition",
        "details": "Already there.",
        "duplicate_of": "p-1",
    }
    assert resource["attributes"]["committee"] is None


@pytest.mark.parametrize("state", [petition_pb2.PETITION_STATE_DRAFT, petition_pb2.PETITION_STATE_SUBMITTED])
def test_a_petition_the_public_cannot_see_is_never_published(state: petition_pb2.PetitionState.ValueType) -> None:
    with pytest.raises(open_data.NotPublished):
        open_data.as_resource(petition_pb2.Petition(id="p-hidden", title="Hidden", state=state))


def test_the_collection_is_sorted_by_id_so_two_exports_are_identical() -> None:
    first = petition_pb2.Petition(id="p-b", title="B", state=petition_pb2.PETITION_STATE_OPEN)
    second = petition_pb2.Petition(id="p-a", title="Ä", state=petition_pb2.PETITION_STATE_CLOSED)
    exported = open_data.to_json([first, second])
    assert exported == open_data.to_json([second, first])
    assert [r["id"] for r in json.loads(exported)["data"]] == ["p-a", "p-b"]
    assert "Ä" in exported, "non-ASCII text is kept as text"


# Through the CLI, against the real service.


def _metadata(system: SystemClient, *petition_ids: str) -> dict[str, dict[str, Any]]:
    result = run_cli(system.namespace.env(system.stack), "open-data", "--metadata", *petition_ids)
    assert result.returncode == 0, result.stderr
    return {r["id"]: r for r in json.loads(result.stdout)["data"]}


def test_the_cli_publishes_a_petitions_metadata_state_committee_and_rapporteur(system: SystemClient) -> None:
    petition = system.create_petition(
        "Published metadata",
        text="What it asks",
        author="an-author-pseudonym-kept-private",
        author_name="Louise M.",
        committee="lois",
        rapporteur="M. Bernard",
    )
    system.petitions.ClosePetition(
        petitions_pb2.ClosePetitionRequest(petition_id=petition.id, reason="closed by the committee"),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )
    names = {
        c.id: c.name
        for c in system.petitions.ListCommittees(petitions_pb2.ListCommitteesRequest(), timeout=10).committees
    }
    result = run_cli(system.namespace.env(system.stack), "open-data", "--metadata", petition.id)
    assert result.returncode == 0, result.stderr
    assert "an-author-pseudonym-kept-private" not in result.stdout
    [resource] = json.loads(result.stdout)["data"]
    assert (resource["id"], resource["type"]) == (petition.id, "petition")
    attributes = resource["attributes"]
    assert (attributes["title"], attributes["text"], attributes["creator_name"]) == (
        "Published metadata",
        "What it asks",
        "Louise M.",
    )
    assert (attributes["state"], attributes["closed_reason"]) == ("closed", "closed by the committee")
    assert attributes["committee"] == {"id": "lois", "name": names["lois"]}
    assert attributes["rapporteur"] == "M. Bernard"
    assert attributes["petition_type"] == petition.type
    assert attributes["created_at"].endswith("Z")


def test_every_published_petition_is_exported_and_a_draft_never_is(system: SystemClient) -> None:
    published = system.create_petition("Exported")
    draft = system.create_petition("Not exported", open_now=False)
    exported = _metadata(system)
    assert published.id in exported
    assert draft.id not in exported
    assert all(r["attributes"]["state"] not in ("draft", "submitted") for r in exported.values())

    named = run_cli(system.namespace.env(system.stack), "open-data", "--metadata", draft.id)
    assert named.returncode == 1
    assert "NOT_FOUND" in named.stderr
    assert named.stdout == ""


def test_the_metadata_export_is_written_to_a_file(system: SystemClient, tmp_path: Path) -> None:
    petition = system.create_petition("Written to a file")
    target = tmp_path / "petitions.json"
    result = run_cli(
        system.namespace.env(system.stack), "open-data", "--metadata", petition.id, "--output", str(target)
    )
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    assert [r["id"] for r in json.loads(target.read_text(encoding="utf-8"))["data"]] == [petition.id]


def author_metadata(system: SystemClient) -> tuple[tuple[str, str | bytes], ...]:
    """An author's credential (gRPC metadata) from identity."""
    return system.author(f"od-author-{uuid.uuid4().hex[:8]}")


def test_a_rejection_and_the_outcomes_reach_the_open_data(system: SystemClient) -> None:
    writer = author_metadata(system)
    original = system.create_petition("The original")
    draft = system.petitions.CreateDraft(
        petitions_pb2.CreateDraftRequest(type="assemblee", title="The same again"), metadata=writer, timeout=10
    )
    system.petitions.SubmitPetition(
        petitions_pb2.SubmitPetitionRequest(petition_id=draft.id), metadata=writer, timeout=10
    )
    system.petitions.ReviewPetition(
        petitions_pb2.ReviewPetitionRequest(
            petition_id=draft.id,
            decision=petitions_pb2.ReviewPetitionRequest.DECISION_REJECT,
            rejection=petition_pb2.Rejection(
                reason_code="duplicate", explanation="See the original.", duplicate_of=original.id
            ),
        ),
        metadata=system.staff("staff-moderator-a"),
        timeout=10,
    )
    clerk = system.staff("staff-clerk")
    response = petition_pb2.Outcome(
        kind=petition_pb2.Outcome.KIND_RESPONSE, text="Answered.", date=_stamp(1_780_000_000)
    )
    system.petitions.RecordOutcome(
        petitions_pb2.RecordOutcomeRequest(petition_id=original.id, outcome=response), metadata=clerk, timeout=10
    )
    system.petitions.ClosePetition(
        petitions_pb2.ClosePetitionRequest(petition_id=original.id, reason="done"), metadata=clerk, timeout=10
    )
    debate = petition_pb2.Outcome(
        kind=petition_pb2.Outcome.KIND_DEBATE,
        text="Debated.",
        date=_stamp(1_781_000_000),
        links=["https://hansard.example/debate"],
    )
    system.petitions.RecordOutcome(
        petitions_pb2.RecordOutcomeRequest(petition_id=original.id, outcome=debate), metadata=clerk, timeout=10
    )
    reasons = {
        r.code: r.label
        for r in system.petitions.ListPetitionTypes(
            petitions_pb2.ListPetitionTypesRequest(), timeout=10
        ).rejection_reasons
    }

    # Rejected for a reason that hides it: the public export keeps its id,
    # state and rejection, never its words.
    libel = system.petitions.CreateDraft(
        petitions_pb2.CreateDraftRequest(type="assemblee", title="Secret libel title", text="Secret libel text"),
        metadata=writer,
        timeout=10,
    )
    system.petitions.SubmitPetition(
        petitions_pb2.SubmitPetitionRequest(petition_id=libel.id), metadata=writer, timeout=10
    )
    system.petitions.ReviewPetition(
        petitions_pb2.ReviewPetitionRequest(
            petition_id=libel.id,
            decision=petitions_pb2.ReviewPetitionRequest.DECISION_REJECT,
            rejection=petition_pb2.Rejection(reason_code="libellous", explanation="It names a person."),
        ),
        metadata=system.staff("staff-moderator-a"),
        timeout=10,
    )

    result = run_cli(system.namespace.env(system.stack), "open-data", "--metadata", original.id, draft.id, libel.id)
    assert result.returncode == 0, result.stderr
    assert "Secret libel" not in result.stdout
    exported = {r["id"]: r for r in json.loads(result.stdout)["data"]}
    hidden = exported[libel.id]["attributes"]
    assert (hidden["state"], hidden["text"], hidden["rejection"]["code"]) == ("rejected", "", "libellous")
    rejected = exported[draft.id]["attributes"]
    assert rejected["state"] == "rejected"
    assert rejected["rejection"] == {
        "code": "duplicate",
        "label": reasons["duplicate"],
        "details": "See the original.",
        "duplicate_of": original.id,
    }
    answered = exported[original.id]["attributes"]
    assert answered["state"] == "debated"
    assert [(o["kind"], o["date"], o["text"], o["links"]) for o in answered["outcomes"]] == [
        ("response", "2026-05-28T20:26:40Z", "Answered.", []),
        ("debate", "2026-06-09T10:13:20Z", "Debated.", ["https://hansard.example/debate"]),
    ]
    assert all(o["recorded_at"] for o in answered["outcomes"])
