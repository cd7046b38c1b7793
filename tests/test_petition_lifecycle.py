"""A petition's life as signing sees it: opened, closed by staff or by its
deadline, each change announced once on the petition-events topic (the whole
workflow is in test_petition_life.py)."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2, petition_pb2, petitions_pb2, signing_pb2
from tests.errors import rejection
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = pytest.mark.stack


def events_of(system: SystemClient, petition_id: str) -> list[str]:
    """The actions announced for a petition, in order."""
    topic = f"{system.namespace.topic_prefix}petition-events"
    records = system.records_with_key(petition_id.encode(), topic=topic)
    events = [events_pb2.PetitionEvent.FromString(r.value) for r in records]
    return [e.changed.entry.action for e in events if e.HasField("changed")]


def state_of(system: SystemClient, petition_id: str) -> int:
    reply = system.petitions.GetPetition(petitions_pb2.GetPetitionRequest(petition_id=petition_id), timeout=10)
    return int(reply.state)


def test_a_petition_closes_itself_at_its_deadline(system: SystemClient) -> None:
    closes = Timestamp()
    closes.FromNanoseconds(int((time.time() + 2) * 1e9))
    petition = system.create_petition("Two seconds to sign", closes_at=closes)
    early = system.credential(f"early-{uuid.uuid4().hex[:8]}")
    assert system.sign(early.token, petition.id).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED

    eventually(
        lambda: state_of(system, petition.id) == petition_pb2.PETITION_STATE_CLOSED,
        20,
        interval=0.2,
        message="the petition was never closed",
    )

    assert events_of(system, petition.id) == ["create", "close"]
    late = system.credential(f"late-{uuid.uuid4().hex[:8]}")
    with pytest.raises(grpc.RpcError) as raised:
        system.sign(late.token, petition.id)
    assert (rejection(raised.value).code, rejection(raised.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PETITION_NOT_OPEN",
    )
    assert system.settled_tally(petition.id).total == 1


def test_a_close_by_staff_is_announced_once_and_not_repeated(system: SystemClient) -> None:
    petition = system.create_petition("Closed by a clerk")
    request = petitions_pb2.ClosePetitionRequest(petition_id=petition.id, reason="withdrawn")
    closed = system.petitions.ClosePetition(request, metadata=system.staff("staff-clerk"), timeout=10)
    assert closed.state == petition_pb2.PETITION_STATE_CLOSED
    assert events_of(system, petition.id) == ["create", "close"]

    with pytest.raises(grpc.RpcError) as raised:
        system.petitions.ClosePetition(request, metadata=system.staff("staff-clerk"), timeout=10)
    assert (rejection(raised.value).code, rejection(raised.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    )
    assert events_of(system, petition.id) == ["create", "close"]


def test_receipts_are_kept_until_the_petition_closes_plus_the_idempotency_window(system: SystemClient) -> None:
    """Redis holds the receipts of open petitions only: a receipt outlives
    its petition's deadline by the idempotency window (24 h), so a retry
    at the deadline still gets its first answer; an open-ended petition's
    receipts stay."""
    ledger = redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])
    closes_in = 3600.0
    closes = Timestamp()
    closes.FromNanoseconds(int((time.time() + closes_in) * 1e9))
    with_deadline = system.create_petition("Closes in an hour", closes_at=closes)
    open_ended = system.create_petition("Open-ended")
    person = system.credential(f"receipt-{uuid.uuid4().hex[:8]}")
    key = f"retry-{uuid.uuid4().hex}"

    first = system.sign(person.token, with_deadline.id, idempotency_key=key)
    system.sign(person.token, open_ended.id)

    ttl = ledger.ttl(f"signed:{with_deadline.id}:{person.claims.signer}")
    assert closes_in + 24 * 3600 - 60 < ttl <= closes_in + 24 * 3600 + 1
    assert ledger.ttl(f"signed:{open_ended.id}:{person.claims.signer}") == -1, "kept while the petition is open"
    # The receipt answers the retry, and the person's next attempt.
    replay = system.sign(person.token, with_deadline.id, idempotency_key=key)
    assert (replay.outcome, replay.signature_id) == (signing_pb2.SignResponse.OUTCOME_ACCEPTED, first.signature_id)
    assert system.sign(person.token, with_deadline.id).outcome == signing_pb2.SignResponse.OUTCOME_ALREADY_SIGNED
    ledger.close()


def list_page(system: SystemClient, page_size: int, page_token: str = "") -> petitions_pb2.ListPetitionsResponse:
    reply: petitions_pb2.ListPetitionsResponse = system.petitions.ListPetitions(
        petitions_pb2.ListPetitionsRequest(page_size=page_size, page_token=page_token), timeout=10
    )
    return reply


def test_the_petition_list_pages_newest_first_without_repeats_or_gaps(system: SystemClient) -> None:
    made = []
    for i in range(5):
        made.append(system.create_petition(f"Paged {i}").id)
        time.sleep(0.005)  # time is the subject: distinct creation times (Cassandra keeps milliseconds)

    listed: list[str] = []
    first = list_page(system, 2)
    listed += [p.id for p in first.petitions]
    # Created during the walk: newest first, it lands before the first page.
    late = system.create_petition("Created while the list is read").id
    token = first.next_page_token
    pages = 1
    while token:
        # Small pages first, then large ones: the token is a position, not an offset.
        page = list_page(system, 2 if pages < 3 else 500, token)
        assert len(page.petitions) <= (2 if pages < 3 else 500)
        listed += [p.id for p in page.petitions]
        token = page.next_page_token
        pages += 1

    assert listed[:5] == list(reversed(made))
    assert len(listed) == len(set(listed)), "a petition was listed twice"
    assert late not in listed
    everything = [p.id for p in list_page(system, 500).petitions]
    assert everything[0] == late
    assert set(listed) | {late} >= set(everything)


@pytest.mark.parametrize(
    ("page_size", "page_token", "field"),
    [(-1, "", "page_size"), (2, "not a token", "page_token"), (2, "WzEsMl0", "page_token")],
)
def test_a_bad_page_request_is_refused_with_its_field(
    system: SystemClient, page_size: int, page_token: str, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list_page(system, page_size, page_token)
    found = rejection(raised.value)
    assert (found.code, found.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
