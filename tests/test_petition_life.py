"""Whole lives of petitions, as an Assemblée clerk and a UK moderator would
run them, through the public interfaces only: identity for every
credential, the petitions service for every decision, signing and the tally
for the signatures, Kafka for what was published.

The session's types `assemblee-test` and `uk-test` (tests/harness.py) have
the rules of the real ones with small numbers: 3 → committee, 5 from 3
territories → plenary; 5 sponsors, 2 → response, 3 → debate, open 20 s.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2, identity_pb2, petition_pb2, petitions_pb2, signing_pb2
from tests.errors import rejection
from tests.system import SystemClient
from tests.waiting import eventually

State = petition_pb2.PetitionState


def _refused(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    found = rejection(error)
    return found.code, found.reason


def author(system: SystemClient, persona: str, birthdate: str = "1985-04-02") -> tuple[tuple[str, str], ...]:
    """Metadata with the author credential of an identified person."""
    reply = system.identity.ExchangeAuthorIdToken(
        identity_pb2.ExchangeAuthorIdTokenRequest(
            id_token=system.id_token(persona, identified=True, birthdate=birthdate, published_name=True)
        ),
        timeout=10,
    )
    return (("authorization", f"Bearer {reply.token}"),)


def adult_signer(system: SystemClient, persona: str, territory: str) -> str:
    """A signer credential from the provider that serves adults only, in its
    anonymous mode (FranceConnect's signing button)."""
    system.raw_identities.update({f"dev-persona:{persona}", persona})
    body = json.dumps(
        {"persona": persona, "audience": "petitions-test", "country": "FR", "territory": territory}
    ).encode()
    request = urllib.request.Request(
        f"{system.namespace.adults_devidp_url}/dev/id-token", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        id_token = str(json.load(response)["id_token"])
    return system.exchange(id_token).token


def get(
    system: SystemClient, petition_id: str, metadata: tuple[tuple[str, str | bytes], ...] = ()
) -> petition_pb2.Petition:
    reply: petition_pb2.Petition = system.petitions.GetPetition(
        petitions_pb2.GetPetitionRequest(petition_id=petition_id), metadata=metadata, timeout=10
    )
    return reply


def audit_actions(system: SystemClient, petition_id: str) -> list[tuple[str, str]]:
    trail = system.petitions.GetAuditTrail(
        petitions_pb2.GetAuditTrailRequest(petition_id=petition_id), metadata=system.staff("staff-clerk"), timeout=10
    )
    return [(entry.action, entry.role) for entry in trail.entries]


def thresholds_reached(system: SystemClient, petition_id: str) -> set[str]:
    events = [
        events_pb2.PetitionEvent.FromString(record.value)
        for record in system.records_with_key(petition_id.encode(), f"{system.namespace.topic_prefix}petition-events")
    ]
    return {e.threshold_reached.threshold_id for e in events if e.HasField("threshold_reached")}


def sign_refused(system: SystemClient, credential: str, petition_id: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        system.sign(credential, petition_id)
    return _refused(raised.value)


@pytest.mark.timeout(240)
def test_an_assemblee_petition_from_deposit_by_an_adult_to_classement(system: SystemClient) -> None:
    tag = uuid.uuid4().hex[:6]
    # A minor cannot deposit a petition.
    with pytest.raises(grpc.RpcError) as minor:
        author(system, f"minor-{tag}", birthdate="2012-05-01")
    assert _refused(minor.value) == (grpc.StatusCode.FAILED_PRECONDITION, "AUTHOR_NOT_ADULT")

    deposit = author(system, f"author-{tag}")
    draft = system.petitions.CreateDraft(
        petitions_pb2.CreateDraftRequest(
            type="assemblee-test",
            title="Des cantines scolaires avec des produits locaux",
            text="Nous demandons que chaque école publique serve des repas issus de l'agriculture locale.",
        ),
        metadata=deposit,
        timeout=10,
    )
    assert (draft.state, draft.type, draft.version) == (State.PETITION_STATE_DRAFT, "assemblee-test", 1)
    assert draft.author_name.startswith(f"Author-{tag}".title()[:5])
    submitted = system.petitions.SubmitPetition(
        petitions_pb2.SubmitPetitionRequest(petition_id=draft.id), metadata=deposit, timeout=10
    )
    assert submitted.state == State.PETITION_STATE_SUBMITTED  # the Assemblée needs no sponsors
    # Not published yet: the public does not see it; the moderators' queue does.
    with pytest.raises(grpc.RpcError) as unpublished:
        get(system, draft.id)
    assert unpublished.value.code() is grpc.StatusCode.NOT_FOUND
    queue = system.petitions.ListPetitions(
        petitions_pb2.ListPetitionsRequest(state=State.PETITION_STATE_SUBMITTED, page_size=500),
        metadata=system.staff("staff-moderator-a"),
        timeout=10,
    )
    assert draft.id in {p.id for p in queue.petitions}

    opened = system.petitions.ReviewPetition(
        petitions_pb2.ReviewPetitionRequest(
            petition_id=draft.id, decision=petitions_pb2.ReviewPetitionRequest.DECISION_OPEN
        ),
        metadata=system.staff("staff-moderator-a"),
        timeout=10,
    )
    assert opened.state == State.PETITION_STATE_OPEN
    assert not opened.HasField("closes_at")  # open until the end of the legislature
    assert [(t.id, t.signatures, t.min_territories) for t in opened.thresholds] == [
        ("committee", 3, 0),
        ("plenary", 5, 3),
    ]
    assert opened.eligibility.adults_only

    suggestions = system.petitions.SuggestCommittee(
        petitions_pb2.SuggestCommitteeRequest(petition_id=draft.id), metadata=system.staff("staff-clerk"), timeout=10
    ).suggestions
    assert suggestions, "the suggester proposed no committee for a petition about school meals"
    assert suggestions[0].explanation
    committee = suggestions[0].committee
    system.petitions.AssignCommittee(
        petitions_pb2.AssignCommitteeRequest(petition_id=draft.id, committee=committee, note="suggested"),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )
    system.petitions.NameRapporteur(
        petitions_pb2.NameRapporteurRequest(petition_id=draft.id, rapporteur="Mme Camille Rapporteure"),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )

    # Signing has the petition from its view of the petition-state topic.
    signers = [
        adult_signer(system, f"citizen-{tag}-{n}", territory)
        for n, territory in enumerate(["75", "13", "69", "75", "13"])
    ]
    eventually(lambda: system.sign(signers[0], draft.id), 10, message="signing never saw the opened petition")
    # Who may not sign: an email signer (the type accepts FranceConnect only)
    # and a signer of a provider that does not vouch for adulthood.
    email = system.email_credential(f"voter-{tag}@example.org").token
    assert sign_refused(system, email, draft.id) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_ELIGIBLE")
    anonymous = system.credential(f"anon-{tag}").token
    assert sign_refused(system, anonymous, draft.id) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_ELIGIBLE")

    for credential in signers[1:3]:
        system.sign(credential, draft.id)
    tally = system.settled_tally(draft.id)
    assert tally.total == 3
    # 3 signatures from 3 territories: the committee threshold, not the plenary one.
    eventually(lambda: thresholds_reached(system, draft.id) == {"committee"}, 30, message="committee threshold")
    for credential in signers[3:]:
        system.sign(credential, draft.id)
    assert system.settled_tally(draft.id).total == 5
    eventually(
        lambda: thresholds_reached(system, draft.id) == {"committee", "plenary"}, 30, message="plenary threshold"
    )

    classed = system.petitions.ClassPetition(
        petitions_pb2.ClassPetitionRequest(petition_id=draft.id, reason="Classée: une loi est en discussion."),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )
    assert (classed.state, classed.committee, classed.rapporteur) == (
        State.PETITION_STATE_CLASSED,
        committee,
        "Mme Camille Rapporteure",
    )
    late = adult_signer(system, f"late-{tag}", "33")
    eventually(
        lambda: sign_refused(system, late, draft.id) == (grpc.StatusCode.FAILED_PRECONDITION, "PETITION_NOT_OPEN"),
        5,
        message="classement did not close signing",
    )
    assert audit_actions(system, draft.id) == [
        ("create", "author"),
        ("submit", "author"),
        ("open", "moderator"),
        ("assign", "clerk"),
        ("rapporteur", "clerk"),
        ("class", "clerk"),
    ]
    public = get(system, draft.id)
    assert (public.state, public.closed_reason) == (State.PETITION_STATE_CLASSED, "Classée: une loi est en discussion.")


def sponsor(system: SystemClient, petition_id: str, credential: str) -> petitions_pb2.SponsorPetitionResponse:
    reply: petitions_pb2.SponsorPetitionResponse = system.petitions.SponsorPetition(
        petitions_pb2.SponsorPetitionRequest(petition_id=petition_id, credential=credential), timeout=10
    )
    return reply


def uk_petition(system: SystemClient, tag: str, title: str) -> str:
    """A uk-test petition deposited, sponsored by 5 people, and submitted."""
    deposit = author(system, f"uk-author-{tag}")
    draft = system.petitions.CreateDraft(
        petitions_pb2.CreateDraftRequest(type="uk-test", title=title, text="Buses for every village, every hour."),
        metadata=deposit,
        timeout=10,
    )
    gathering = system.petitions.SubmitPetition(
        petitions_pb2.SubmitPetitionRequest(petition_id=draft.id), metadata=deposit, timeout=10
    )
    assert (gathering.state, gathering.sponsors_required) == (State.PETITION_STATE_GATHERING_SPONSORS, 5)
    sponsors = [system.credential(f"sponsor-{tag}-{n}").token for n in range(6)]
    for n, credential in enumerate(sponsors[:5]):
        reply = sponsor(system, draft.id, credential)
        assert reply.counted
        assert reply.petition.sponsors == n + 1
        if n == 1:
            # The same person again counts once.
            again = sponsor(system, draft.id, system.credential(f"sponsor-{tag}-1").token)
            assert (again.counted, again.petition.sponsors) == (False, 2)
    assert get(system, draft.id, system.staff("staff-moderator-b")).state == State.PETITION_STATE_SUBMITTED
    with pytest.raises(grpc.RpcError) as sixth:
        sponsor(system, draft.id, sponsors[5])
    assert sixth.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert get(system, draft.id, system.staff("staff-moderator-b")).sponsors == 5
    return draft.id


@pytest.mark.timeout(240)
def test_a_uk_petition_with_sponsors_a_duplicate_rejected_then_response_debate_and_close(system: SystemClient) -> None:
    tag = uuid.uuid4().hex[:6]
    original = uk_petition(system, tag, "Fund rural bus services")
    opened = system.petitions.ReviewPetition(
        petitions_pb2.ReviewPetitionRequest(
            petition_id=original, decision=petitions_pb2.ReviewPetitionRequest.DECISION_OPEN
        ),
        metadata=system.staff("staff-moderator-b"),
        timeout=10,
    )
    opened_at = time.time()
    assert opened.HasField("closes_at")
    assert opened.closes_at.ToNanoseconds() / 1e9 - opened.decided_at.ToNanoseconds() / 1e9 == pytest.approx(20, abs=1)

    duplicate = uk_petition(system, f"{tag}d", "Pay for buses in the countryside")
    rejected = system.petitions.ReviewPetition(
        petitions_pb2.ReviewPetitionRequest(
            petition_id=duplicate,
            decision=petitions_pb2.ReviewPetitionRequest.DECISION_REJECT,
            rejection=petition_pb2.Rejection(
                reason_code="duplicate",
                explanation="There is already a petition about this issue: please sign it instead.",
                duplicate_of=original,
            ),
        ),
        metadata=system.staff("staff-moderator-a"),
        timeout=10,
    )
    assert rejected.state == State.PETITION_STATE_REJECTED
    assert get(system, duplicate).rejection.duplicate_of == original  # shown to the public with its link

    signers = [system.credential(f"uk-signer-{tag}-{n}").token for n in range(3)]
    eventually(lambda: system.sign(signers[0], original), 10, message="signing never saw the opened petition")
    for credential in signers[1:]:
        system.sign(credential, original)
    assert system.settled_tally(original).total == 3
    eventually(lambda: thresholds_reached(system, original) == {"response", "debate"}, 30, message="UK thresholds")
    responded = system.petitions.RecordOutcome(
        petitions_pb2.RecordOutcomeRequest(
            petition_id=original,
            outcome=petition_pb2.Outcome(
                kind=petition_pb2.Outcome.KIND_RESPONSE,
                date=Timestamp(seconds=int(time.time())),
                text="The Government will fund rural routes.",
                links=["https://example.gov.uk/response"],
            ),
        ),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )
    assert responded.state == State.PETITION_STATE_OPEN  # a response does not end signing

    # The petition closes at the end of its period, by itself.
    eventually(
        lambda: get(system, original).state == State.PETITION_STATE_CLOSED,
        40,
        interval=0.5,
        message="the petition did not close after its period",
    )
    assert time.time() - opened_at >= 19
    late = system.credential(f"uk-late-{tag}").token
    eventually(
        lambda: sign_refused(system, late, original) == (grpc.StatusCode.FAILED_PRECONDITION, "PETITION_NOT_OPEN"),
        5,
        message="signing did not see the close",
    )
    debated = system.petitions.RecordOutcome(
        petitions_pb2.RecordOutcomeRequest(
            petition_id=original,
            outcome=petition_pb2.Outcome(
                kind=petition_pb2.Outcome.KIND_DEBATE,
                date=Timestamp(seconds=int(time.time())),
                text="Debated in Westminster Hall.",
                links=["https://example.parliament.uk/debate", "https://example.parliament.uk/video"],
            ),
        ),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )
    assert debated.state == State.PETITION_STATE_DEBATED
    assert [o.kind for o in debated.outcomes] == [petition_pb2.Outcome.KIND_RESPONSE, petition_pb2.Outcome.KIND_DEBATE]
    actions = audit_actions(system, original)
    assert actions[:2] == [("create", "author"), ("submit", "author")]
    assert ("sponsors-complete", "system") in actions
    assert actions[-4:] == [("open", "moderator"), ("respond", "clerk"), ("close", "system"), ("debate", "clerk")]
    assert audit_actions(system, duplicate)[-1] == ("reject", "moderator")


def test_a_signer_or_author_credential_never_reaches_a_staff_call_nor_an_author_one_sign(
    system: SystemClient,
) -> None:
    petition = system.create_petition("Staff only", open_now=True)
    signer = system.credential(f"s-{uuid.uuid4().hex[:6]}").token
    deposit = author(system, f"a-{uuid.uuid4().hex[:6]}")
    for metadata in ((("authorization", f"Bearer {signer}"),), deposit):
        with pytest.raises(grpc.RpcError) as refused:
            system.petitions.ClassPetition(
                petitions_pb2.ClassPetitionRequest(petition_id=petition.id, reason="no"), metadata=metadata, timeout=10
            )
        assert _refused(refused.value) == (grpc.StatusCode.PERMISSION_DENIED, "WRONG_ROLE")
    assert get(system, petition.id).version == petition.version
    # And Sign never takes an author credential.
    token = deposit[0][1].removeprefix("Bearer ")
    with pytest.raises(grpc.RpcError) as sign:
        system.signing.Sign(
            signing_pb2.SignRequest(credential=token, petition_id=petition.id, idempotency_key=uuid.uuid4().hex),
            timeout=10,
        )
    assert sign.value.code() is grpc.StatusCode.UNAUTHENTICATED
