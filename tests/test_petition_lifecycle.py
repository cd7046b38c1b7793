"""A petition's life: opened, closed by an admin or by its deadline, each
change announced once on the petition-events topic."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2, petition_pb2, signing_pb2
from tests.errors import rejection
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def events_of(system: SystemClient, petition_id: str) -> list[str]:
    topic = f"{system.namespace.topic_prefix}petition-events"
    records = system.records_with_key(petition_id.encode(), topic=topic)
    return [str(events_pb2.PetitionEvent.FromString(r.value).WhichOneof("event")) for r in records]


def state_of(system: SystemClient, petition_id: str) -> int:
    reply = system.signing.GetPetition(signing_pb2.GetPetitionRequest(petition_id=petition_id), timeout=10)
    return int(reply.state)


def test_a_petition_closes_itself_at_its_deadline(system: SystemClient) -> None:
    closes = Timestamp()
    closes.FromNanoseconds(int((time.time() + 2) * 1e9))
    petition = system.create_petition("Two seconds to sign", closes_at=closes)
    early = system.credential(f"early-{uuid.uuid4().hex[:8]}")
    assert system.sign(early.token, petition.id).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED

    deadline = time.monotonic() + 20
    while state_of(system, petition.id) != petition_pb2.PETITION_STATE_CLOSED:
        assert time.monotonic() < deadline, "the petition was never closed"
        time.sleep(0.2)

    assert events_of(system, petition.id) == ["opened", "closed"]
    late = system.credential(f"late-{uuid.uuid4().hex[:8]}")
    with pytest.raises(grpc.RpcError) as raised:
        system.sign(late.token, petition.id)
    assert (rejection(raised.value).code, rejection(raised.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PETITION_NOT_OPEN",
    )
    assert system.settled_tally(petition.id).total == 1


def test_admin_transitions_are_announced_and_checked(system: SystemClient) -> None:
    draft = system.create_petition("Draft first", open_now=False)
    opened = system.signing.OpenPetition(
        signing_pb2.OpenPetitionRequest(petition_id=draft.id), metadata=system.admin(), timeout=10
    )
    closed = system.signing.ClosePetition(
        signing_pb2.ClosePetitionRequest(petition_id=draft.id), metadata=system.admin(), timeout=10
    )
    assert (opened.state, closed.state) == (petition_pb2.PETITION_STATE_OPEN, petition_pb2.PETITION_STATE_CLOSED)
    assert events_of(system, draft.id) == ["opened", "closed"]

    with pytest.raises(grpc.RpcError) as raised:
        system.signing.OpenPetition(
            signing_pb2.OpenPetitionRequest(petition_id=draft.id), metadata=system.admin(), timeout=10
        )
    assert (rejection(raised.value).code, rejection(raised.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
