"""Authors' drafts and submissions, and sponsors, through the petitions
service's gRPC API against the real stores: what each call leaves in the
petition, the audit trail, petition_sponsors and petition-events, and that
every refusal leaves them as they were."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest

from petitions.v1 import petition_pb2, petitions_pb2
from tests.errors import rejection
from tests.petition_authors import (
    Refusal,
    assert_refusals_change_nothing,
    audit,
    author,
    bearer,
    draft,
    events,
    same_person_as_signer,
    stored,
    submit,
)
from tests.system import SystemClient

pytestmark = pytest.mark.stack

G = grpc.StatusCode


def _types(system: SystemClient) -> petitions_pb2.ListPetitionTypesResponse:
    reply: petitions_pb2.ListPetitionTypesResponse = system.petitions.ListPetitionTypes(
        petitions_pb2.ListPetitionTypesRequest(), timeout=10
    )
    return reply


def _sponsor(system: SystemClient, petition_id: str, credential: str) -> petitions_pb2.SponsorPetitionResponse:
    reply: petitions_pb2.SponsorPetitionResponse = system.petitions.SponsorPetition(
        petitions_pb2.SponsorPetitionRequest(petition_id=petition_id, credential=credential), timeout=30
    )
    return reply


def _sponsor_rows(system: SystemClient, petition_id: str) -> set[str]:
    rows = system.cassandra.execute("SELECT sponsor FROM petition_sponsors WHERE petition_id = %s", (petition_id,))
    return {row.sponsor for row in rows}


def _gathering(system: SystemClient) -> tuple[petition_pb2.Petition, str]:
    """A UK-style petition gathering its 5 sponsors, and its author's persona."""
    persona = f"author-{uuid.uuid4().hex[:8]}"
    writer = author(system, persona)
    petition = submit(system, writer, draft(system, writer, "uk").id)
    assert (petition.state, petition.sponsors, petition.sponsors_required) == (
        petition_pb2.PETITION_STATE_GATHERING_SPONSORS,
        0,
        5,
    )
    return petition, persona


def test_an_author_drafts_edits_and_submits_and_the_draft_takes_its_rules_from_its_type(
    system: SystemClient,
) -> None:
    writer = author(system)
    petition = draft(system, writer, "assemblee", title="Free school meals", text="For every pupil.")
    types = _types(system)
    assemblee = next(t for t in types.types if t.id == "assemblee")
    assert petition.state == petition_pb2.PETITION_STATE_DRAFT
    assert (petition.author, petition.author_name) == (writer.pseudonym, writer.display_name)
    assert (petition.title, petition.text, petition.type) == ("Free school meals", "For every pupil.", "assemblee")
    assert list(petition.thresholds) == list(assemblee.thresholds)
    assert petition.eligibility == assemblee.eligibility
    assert petition.sponsors_required == assemblee.sponsors_required == 0
    assert petition.legislature == types.current_legislature
    assert petition.version == 1

    edited = system.petitions.UpdateDraft(
        petitions_pb2.UpdateDraftRequest(
            petition_id=petition.id, title="Free school meals for all", text="For every pupil.\nEvery day."
        ),
        metadata=writer.metadata,
        timeout=10,
    )
    assert (edited.title, edited.text, edited.version) == (
        "Free school meals for all",
        "For every pupil.\nEvery day.",
        2,
    )
    # The author sees their own unpublished draft; the public does not.
    mine = system.petitions.GetPetition(
        petitions_pb2.GetPetitionRequest(petition_id=petition.id), metadata=writer.metadata, timeout=10
    )
    assert mine == edited
    with pytest.raises(grpc.RpcError) as hidden:
        system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition.id), timeout=10)
    assert hidden.value.code() is G.NOT_FOUND

    sent = submit(system, writer, petition.id)
    assert (sent.state, sent.version) == (petition_pb2.PETITION_STATE_SUBMITTED, 3)
    assert sent.HasField("submitted_at")
    assert [(e.version, e.action, e.role, e.actor, e.actor_name) for e in audit(system, petition.id)] == [
        (1, "create", "author", writer.pseudonym, ""),
        (2, "update", "author", writer.pseudonym, ""),
        (3, "submit", "author", writer.pseudonym, ""),
    ]
    assert [(e.version, e.action) for e in events(system, petition.id)] == [(1, "create"), (2, "update"), (3, "submit")]

    # Once submitted, the draft is no longer the author's to edit.
    with pytest.raises(grpc.RpcError) as late:
        system.petitions.UpdateDraft(
            petitions_pb2.UpdateDraftRequest(petition_id=petition.id, title="Changed after submission"),
            metadata=writer.metadata,
            timeout=10,
        )
    refused = rejection(late.value)
    assert (refused.code, refused.reason) == (G.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert "SUBMITTED" in refused.message
    assert stored(system, petition.id) == sent


def test_a_draft_of_a_type_that_needs_sponsors_is_submitted_to_gather_them(system: SystemClient) -> None:
    petition, _ = _gathering(system)
    assert petition.HasField("submitted_at")
    # Sponsors follow a link to it: it is public.
    public = system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition.id), timeout=10)
    assert public == petition


def test_refused_drafts_and_edits_change_nothing(system: SystemClient) -> None:
    writer = author(system)
    other = author(system)
    mine = draft(system, writer)
    signer = system.credential(f"signer-{uuid.uuid4().hex[:8]}").token
    taken_id = mine.id

    def create(metadata: tuple[tuple[str, str | bytes], ...], **fields: str) -> object:
        return system.petitions.CreateDraft(
            petitions_pb2.CreateDraftRequest(
                id=fields.get("id", f"n-{uuid.uuid4().hex[:10]}"),
                type=fields.get("type", "assemblee"),
                title=fields.get("title", "A title"),
                text=fields.get("text", ""),
            ),
            metadata=metadata,
            timeout=10,
        )

    def update(metadata: tuple[tuple[str, str | bytes], ...], **fields: object) -> object:
        return system.petitions.UpdateDraft(
            petitions_pb2.UpdateDraftRequest(
                petition_id=mine.id,
                title=str(fields.get("title", "New title")),
                text=str(fields.get("text", "")),
                expected_version=int(str(fields.get("expected_version", 0))),
            ),
            metadata=metadata,
            timeout=10,
        )

    def send(metadata: tuple[tuple[str, str | bytes], ...]) -> object:
        return system.petitions.SubmitPetition(
            petitions_pb2.SubmitPetitionRequest(petition_id=mine.id), metadata=metadata, timeout=10
        )

    staff = system.staff("staff-admin")
    assert_refusals_change_nothing(
        system,
        [mine.id],
        [
            Refusal("unknown type", lambda: create(writer.metadata, type="no-such-type"), G.NOT_FOUND, "UNKNOWN_TYPE"),
            Refusal("taken id", lambda: create(writer.metadata, id=taken_id), G.ALREADY_EXISTS, "PETITION_EXISTS"),
            Refusal("no title", lambda: create(writer.metadata, title="  "), G.INVALID_ARGUMENT, "INVALID_FIELD"),
            Refusal(
                "title of 2 lines", lambda: create(writer.metadata, title="a\nb"), G.INVALID_ARGUMENT, "INVALID_FIELD"
            ),
            Refusal("NUL in text", lambda: create(writer.metadata, text="a\x00b"), G.INVALID_ARGUMENT, "INVALID_FIELD"),
            Refusal("bad id", lambda: create(writer.metadata, id="Not An Id"), G.INVALID_ARGUMENT, "INVALID_FIELD"),
            Refusal("create, no credential", lambda: create(()), G.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"),
            Refusal("create, staff", lambda: create(staff), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("create, signer", lambda: create(bearer(signer)), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("create, forged", lambda: create(bearer("x.y.z")), G.UNAUTHENTICATED, "CREDENTIAL_REJECTED"),
            Refusal("update, other author", lambda: update(other.metadata), G.PERMISSION_DENIED, "NOT_AUTHOR"),
            Refusal("update, staff", lambda: update(staff), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("update, signer", lambda: update(bearer(signer)), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("update, no credential", lambda: update(()), G.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"),
            Refusal(
                "update, ESC in title",
                lambda: update(writer.metadata, title="a\x1bb"),
                G.INVALID_ARGUMENT,
                "INVALID_FIELD",
            ),
            Refusal(
                "update, stale version",
                lambda: update(writer.metadata, expected_version=7),
                G.FAILED_PRECONDITION,
                "VERSION_CONFLICT",
            ),
            Refusal("submit, other author", lambda: send(other.metadata), G.PERMISSION_DENIED, "NOT_AUTHOR"),
            Refusal(
                "submit, staff", lambda: send(system.staff("staff-moderator-a")), G.PERMISSION_DENIED, "WRONG_ROLE"
            ),
            Refusal("submit, signer", lambda: send(bearer(signer)), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("submit, no credential", lambda: send(()), G.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"),
        ],
    )


def test_five_sponsors_submit_a_uk_petition_each_counted_once_and_never_its_author(system: SystemClient) -> None:
    petition, persona = _gathering(system)
    sponsors = [system.credential(f"sponsor-{uuid.uuid4().hex[:8]}") for _ in range(6)]

    first = _sponsor(system, petition.id, sponsors[0].token)
    assert first.counted
    assert (first.petition.sponsors, first.petition.state) == (1, petition_pb2.PETITION_STATE_GATHERING_SPONSORS)

    # The same person again, with a fresh credential: counted once.
    again = _sponsor(system, petition.id, system.credential_for_same(sponsors[0]).token)
    assert not again.counted
    assert again.petition == first.petition

    own = same_person_as_signer(system, persona)
    assert own.claims.signer == petition.author
    assert_refusals_change_nothing(
        system,
        [petition.id],
        [
            Refusal(
                "its author",
                lambda: _sponsor(system, petition.id, own.token),
                G.FAILED_PRECONDITION,
                "AUTHOR_CANNOT_SPONSOR",
            ),
            Refusal(
                "no credential", lambda: _sponsor(system, petition.id, ""), G.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"
            ),
            Refusal(
                "an author credential",
                lambda: _sponsor(system, petition.id, author(system).token),
                G.PERMISSION_DENIED,
                "WRONG_ROLE",
            ),
            Refusal(
                "a staff credential",
                lambda: _sponsor(system, petition.id, system.staff_credential("staff-moderator-a")),
                G.PERMISSION_DENIED,
                "WRONG_ROLE",
            ),
            Refusal(
                "a forged credential",
                lambda: _sponsor(system, petition.id, "x.y.z"),
                G.UNAUTHENTICATED,
                "CREDENTIAL_REJECTED",
            ),
        ],
    )

    for count, sponsor in enumerate(sponsors[1:4], start=2):
        reply = _sponsor(system, petition.id, sponsor.token)
        assert (reply.counted, reply.petition.sponsors, reply.petition.state) == (
            True,
            count,
            petition_pb2.PETITION_STATE_GATHERING_SPONSORS,
        )
    fifth = _sponsor(system, petition.id, sponsors[4].token)
    assert (fifth.counted, fifth.petition.sponsors, fifth.petition.state) == (
        True,
        5,
        petition_pb2.PETITION_STATE_SUBMITTED,
    )

    # The sixth finds it gone to moderation.
    with pytest.raises(grpc.RpcError) as late:
        _sponsor(system, petition.id, sponsors[5].token)
    refused = rejection(late.value)
    assert (refused.code, refused.reason) == (G.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    assert "SUBMITTED" in refused.message
    assert stored(system, petition.id) == fifth.petition

    # Pseudonyms only, one row per counted sponsor.
    assert _sponsor_rows(system, petition.id) == {s.claims.signer for s in sponsors[:5]}
    trail = audit(system, petition.id)
    assert [(e.action, e.role, e.actor) for e in trail[2:]] == [
        ("sponsor", "system", "system"),
        ("sponsor", "system", "system"),
        ("sponsor", "system", "system"),
        ("sponsor", "system", "system"),
        ("sponsors-complete", "system", "system"),
    ]
    assert trail[-1].state_after == petition_pb2.PETITION_STATE_SUBMITTED
    assert [e.action for e in events(system, petition.id)][-5:] == ["sponsor"] * 4 + ["sponsors-complete"]


def test_eight_sponsors_at_once_on_a_five_sponsor_petition_count_exactly_five(system: SystemClient) -> None:
    petition, _ = _gathering(system)
    credentials = [system.credential(f"crowd-{uuid.uuid4().hex[:8]}") for _ in range(8)]
    start = threading.Barrier(len(credentials))
    outcomes: dict[str, petitions_pb2.SponsorPetitionResponse | grpc.RpcError] = {}

    def support(credential: str, signer: str) -> None:
        start.wait()
        try:
            outcomes[signer] = _sponsor(system, petition.id, credential)
        except grpc.RpcError as error:
            outcomes[signer] = error

    threads = [threading.Thread(target=support, args=(c.token, c.claims.signer)) for c in credentials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    counted = {s for s, o in outcomes.items() if isinstance(o, petitions_pb2.SponsorPetitionResponse) and o.counted}
    refused = {s: rejection(o) for s, o in outcomes.items() if isinstance(o, grpc.RpcError)}
    assert len(outcomes) == 8
    assert len(counted) == 5, {s: r.message for s, r in refused.items()}
    assert len(refused) == 3
    for why in refused.values():
        assert (why.code, why.reason) == (G.FAILED_PRECONDITION, "ILLEGAL_TRANSITION"), why.message
        assert "SUBMITTED" in why.message
    final = stored(system, petition.id)
    assert (final.sponsors, final.state) == (5, petition_pb2.PETITION_STATE_SUBMITTED)
    # The refused ones are not left on record.
    assert _sponsor_rows(system, petition.id) == counted
    actions = [e.action for e in audit(system, petition.id)]
    assert actions.count("sponsor") == 4
    assert actions.count("sponsors-complete") == 1


def test_a_draft_takes_no_sponsors_and_is_not_confirmed_to_exist(system: SystemClient) -> None:
    writer = author(system)
    petition = draft(system, writer, "uk")
    sponsor = system.credential(f"early-{uuid.uuid4().hex[:8]}")
    assert_refusals_change_nothing(
        system,
        [petition.id],
        [
            Refusal(
                "sponsor a draft",
                lambda: _sponsor(system, petition.id, sponsor.token),
                G.NOT_FOUND,
                "PETITION_NOT_FOUND",
            )
        ],
    )
    assert _sponsor_rows(system, petition.id) == set()
