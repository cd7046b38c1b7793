"""Moderators' admissibility decisions through the petitions service's gRPC
API against the real stores: opening (signing for the type's period),
rejecting with a configured reason, a public explanation and a duplicate's
link, two moderators at once, and every refusal changing nothing."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import jwt
import pytest

from petitions.v1 import petition_pb2, petitions_pb2, signing_pb2
from tests.errors import rejection
from tests.petition_authors import (
    Refusal,
    assert_refusals_change_nothing,
    audit,
    author,
    bearer,
    draft,
    events,
    stored,
    submitted,
)
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = pytest.mark.stack

G = grpc.StatusCode
Review = petitions_pb2.ReviewPetitionRequest
DAY = 86_400


def _review(
    system: SystemClient,
    petition_id: str,
    decision: petitions_pb2.ReviewPetitionRequest.Decision.ValueType,
    metadata: tuple[tuple[str, str | bytes], ...] | None = None,
    rejection_: petition_pb2.Rejection | None = None,
) -> petition_pb2.Petition:
    reply: petition_pb2.Petition = system.petitions.ReviewPetition(
        Review(petition_id=petition_id, decision=decision, rejection=rejection_),
        metadata=system.staff("staff-moderator-a") if metadata is None else metadata,
        timeout=10,
    )
    return reply


def _staff_id(system: SystemClient, persona: str) -> str:
    """The staff pseudonym a persona's credential carries (its subject)."""
    return str(jwt.decode(system.staff_credential(persona), options={"verify_signature": False})["sub"])


def _uk_submitted(system: SystemClient) -> petition_pb2.Petition:
    writer = author(system)
    petition = draft(system, writer, "uk")
    system.petitions.SubmitPetition(
        petitions_pb2.SubmitPetitionRequest(petition_id=petition.id), metadata=writer.metadata, timeout=10
    )
    for _ in range(5):
        reply = system.petitions.SponsorPetition(
            petitions_pb2.SponsorPetitionRequest(
                petition_id=petition.id, credential=system.credential(f"s-{uuid.uuid4().hex[:8]}").token
            ),
            timeout=10,
        )
    assert reply.petition.state == petition_pb2.PETITION_STATE_SUBMITTED
    return reply.petition


def test_a_moderator_opens_a_uk_petition_for_its_six_months(system: SystemClient) -> None:
    petition = _uk_submitted(system)
    before = time.time()
    opened = _review(system, petition.id, Review.DECISION_OPEN)
    after = time.time()
    assert opened.state == petition_pb2.PETITION_STATE_OPEN
    opens_at = opened.opens_at.ToNanoseconds() / 1e9
    assert before - 1 <= opens_at <= after + 1
    assert opened.closes_at.ToNanoseconds() / 1e9 == pytest.approx(opens_at + 182 * DAY, abs=0.001)
    assert opened.decided_at == opened.opens_at
    entry = audit(system, petition.id)[-1]
    assert (entry.action, entry.role, entry.actor) == ("open", "moderator", _staff_id(system, "staff-moderator-a"))
    assert entry.actor_name
    # Published: signing takes signatures from its petition-state view.
    credential = system.credential(f"signer-{uuid.uuid4().hex[:8]}").token

    def signed() -> signing_pb2.SignResponse | None:
        try:
            return system.sign(credential, petition.id)
        except grpc.RpcError as error:
            if rejection(error).reason in ("PETITION_NOT_FOUND", "PETITION_NOT_OPEN"):
                return None  # the view has not seen the opening yet
            raise

    assert eventually(signed, 5).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED


def test_an_assemblee_petition_opens_until_the_end_of_its_legislature(system: SystemClient) -> None:
    petition = submitted(system, "assemblee")
    opened = _review(system, petition.id, Review.DECISION_OPEN)
    assert opened.state == petition_pb2.PETITION_STATE_OPEN
    assert opened.HasField("opens_at")
    assert opened.HasField("decided_at")
    assert not opened.HasField("closes_at")


def test_a_duplicate_is_rejected_with_a_link_to_the_published_petition(system: SystemClient) -> None:
    original = system.create_petition("Protect hedgerows")
    petition = submitted(system, "assemblee", title="Protect our hedgerows")
    rejected = _review(
        system,
        petition.id,
        Review.DECISION_REJECT,
        rejection_=petition_pb2.Rejection(
            reason_code="duplicate", explanation="There is already a petition about this.", duplicate_of=original.id
        ),
    )
    assert rejected.state == petition_pb2.PETITION_STATE_REJECTED
    assert rejected.rejection == petition_pb2.Rejection(
        reason_code="duplicate", explanation="There is already a petition about this.", duplicate_of=original.id
    )
    assert rejected.HasField("decided_at")
    # The UK publishes rejections with their reason.
    public = system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition.id), timeout=10)
    assert public.rejection.duplicate_of == original.id
    entry = audit(system, petition.id)[-1]
    assert (entry.action, entry.role, entry.reason) == ("reject", "moderator", "duplicate")
    assert entry.state_after == petition_pb2.PETITION_STATE_REJECTED
    assert "rejection" in entry.after


def test_other_reasons_need_no_link(system: SystemClient) -> None:
    petition = submitted(system)
    rejected = _review(
        system,
        petition.id,
        Review.DECISION_REJECT,
        rejection_=petition_pb2.Rejection(reason_code="no-action", explanation="It asks for no action."),
    )
    assert (rejected.state, rejected.rejection.reason_code) == (petition_pb2.PETITION_STATE_REJECTED, "no-action")


def test_refused_reviews_change_nothing(system: SystemClient) -> None:
    petition = submitted(system)
    a_draft = draft(system, author(system))
    original = system.create_petition("Original")
    signer = system.credential(f"signer-{uuid.uuid4().hex[:8]}").token

    def reject(code: str = "duplicate", explanation: str = "Already asked.", duplicate_of: str = "") -> object:
        return _review(
            system,
            petition.id,
            Review.DECISION_REJECT,
            rejection_=petition_pb2.Rejection(reason_code=code, explanation=explanation, duplicate_of=duplicate_of),
        )

    def open_as(metadata: tuple[tuple[str, str | bytes], ...]) -> object:
        return _review(system, petition.id, Review.DECISION_OPEN, metadata)

    bad = G.INVALID_ARGUMENT
    assert_refusals_change_nothing(
        system,
        [petition.id, a_draft.id],
        [
            Refusal("unknown reason", lambda: reject("not-a-reason"), G.NOT_FOUND, "UNKNOWN_REASON"),
            Refusal("no explanation", lambda: reject(explanation=" ", duplicate_of=original.id), bad, "INVALID_FIELD"),
            Refusal(
                "two paragraphs",
                lambda: reject(explanation="One.\n\nTwo.", duplicate_of=original.id),
                bad,
                "INVALID_FIELD",
            ),
            Refusal("duplicate without a link", lambda: reject(), bad, "INVALID_FIELD"),
            Refusal("duplicate of nothing", lambda: reject(duplicate_of="no-such-petition"), bad, "INVALID_FIELD"),
            Refusal("duplicate of a draft", lambda: reject(duplicate_of=a_draft.id), bad, "INVALID_FIELD"),
            Refusal("duplicate of itself", lambda: reject(duplicate_of=petition.id), bad, "INVALID_FIELD"),
            Refusal("duplicate of a bad id", lambda: reject(duplicate_of="Bad Id"), bad, "INVALID_FIELD"),
            Refusal(
                "a link for another reason", lambda: reject("unclear", duplicate_of=original.id), bad, "INVALID_FIELD"
            ),
            Refusal(
                "reject without a rejection",
                lambda: _review(system, petition.id, Review.DECISION_REJECT),
                bad,
                "INVALID_FIELD",
            ),
            Refusal(
                "open with a rejection",
                lambda: _review(
                    system,
                    petition.id,
                    Review.DECISION_OPEN,
                    rejection_=petition_pb2.Rejection(reason_code="unclear", explanation="x"),
                ),
                bad,
                "INVALID_FIELD",
            ),
            Refusal(
                "no decision", lambda: _review(system, petition.id, Review.DECISION_UNSPECIFIED), bad, "INVALID_FIELD"
            ),
            Refusal(
                "a draft",
                lambda: _review(system, a_draft.id, Review.DECISION_OPEN),
                G.FAILED_PRECONDITION,
                "ILLEGAL_TRANSITION",
            ),
            Refusal("a clerk", lambda: open_as(system.staff("staff-clerk")), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal(
                "an administrator", lambda: open_as(system.staff("staff-admin")), G.PERMISSION_DENIED, "WRONG_ROLE"
            ),
            Refusal("an author", lambda: open_as(author(system).metadata), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("a signer", lambda: open_as(bearer(signer)), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("no credential", lambda: open_as(()), G.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"),
            Refusal("a forged credential", lambda: open_as(bearer("x.y.z")), G.UNAUTHENTICATED, "CREDENTIAL_REJECTED"),
        ],
    )


def test_two_moderators_deciding_at_once_make_exactly_one_decision(system: SystemClient) -> None:
    petition = submitted(system)
    start = threading.Barrier(2)
    outcomes: dict[str, petition_pb2.Petition | grpc.RpcError] = {}

    def decide(persona: str, decision: petitions_pb2.ReviewPetitionRequest.Decision.ValueType) -> None:
        reason = petition_pb2.Rejection(reason_code="unclear", explanation="What does it ask?")
        start.wait()
        try:
            outcomes[persona] = _review(
                system,
                petition.id,
                decision,
                system.staff(persona),
                reason if decision == Review.DECISION_REJECT else None,
            )
        except grpc.RpcError as error:
            outcomes[persona] = error

    # Credentials first, so both calls leave at the same moment.
    system.staff("staff-moderator-a"), system.staff("staff-moderator-b")
    threads = [
        threading.Thread(target=decide, args=("staff-moderator-a", Review.DECISION_OPEN)),
        threading.Thread(target=decide, args=("staff-moderator-b", Review.DECISION_REJECT)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    won = {p: o for p, o in outcomes.items() if isinstance(o, petition_pb2.Petition)}
    lost = {p: rejection(o) for p, o in outcomes.items() if isinstance(o, grpc.RpcError)}
    assert len(won) == 1, outcomes
    assert len(lost) == 1, outcomes
    ((winner, decided),) = won.items()
    ((_, refused),) = lost.items()
    assert (refused.code, refused.reason) == (G.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
    state_name = "OPEN" if decided.state == petition_pb2.PETITION_STATE_OPEN else "REJECTED"
    assert f"petition is {state_name}" in refused.message
    assert stored(system, petition.id) == decided
    decisions = [e for e in audit(system, petition.id) if e.action in ("open", "reject")]
    assert len(decisions) == 1
    assert (decisions[0].actor, decisions[0].role) == (_staff_id(system, winner), "moderator")
    assert len([e for e in events(system, petition.id) if e.action in ("open", "reject")]) == 1
