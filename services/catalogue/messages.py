"""Conversions between catalogue petitions and their protobuf messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import petition_pb2
from services.catalogue.model import Petition, PetitionState

STATE_TO_PROTO = {
    PetitionState.DRAFT: petition_pb2.PETITION_STATE_DRAFT,
    PetitionState.OPEN: petition_pb2.PETITION_STATE_OPEN,
    PetitionState.CLOSED: petition_pb2.PETITION_STATE_CLOSED,
    PetitionState.REJECTED: petition_pb2.PETITION_STATE_REJECTED,
}
STATE_FROM_PROTO = {value: key for key, value in STATE_TO_PROTO.items()}


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def seconds_of(value: Timestamp, present: bool) -> float | None:
    return value.ToNanoseconds() / 1e9 if present else None


def petition_message(petition: Petition) -> petition_pb2.Petition:
    return petition_pb2.Petition(
        id=petition.id,
        title=petition.title,
        text=petition.text,
        author=petition.author,
        state=STATE_TO_PROTO[petition.state],
        opens_at=timestamp(petition.opens_at),
        closes_at=timestamp(petition.closes_at),
        thresholds=[
            petition_pb2.Threshold(id=t.id, label=t.label, signatures=t.signatures, min_territories=t.min_territories)
            for t in petition.thresholds
        ],
        committee=petition.committee,
        eligibility=petition_pb2.Eligibility(
            countries=sorted(petition.eligibility.countries), adults_only=petition.eligibility.adults_only
        ),
        created_at=timestamp(petition.created_at),
        updated_at=timestamp(petition.updated_at),
    )
