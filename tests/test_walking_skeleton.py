"""One signature through the whole real system: dev provider → identity →
signing → Kafka → tally → Cassandra and Redis."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from petitions.v1 import events_pb2, signing_pb2
from tests.stored_signatures import shard_rows
from tests.system import SystemClient

pytestmark = pytest.mark.stack

ACCEPTED = signing_pb2.SignResponse.OUTCOME_ACCEPTED
ALREADY_SIGNED = signing_pb2.SignResponse.OUTCOME_ALREADY_SIGNED


def persona() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


def test_a_signature_is_counted_stored_and_published_without_the_raw_subject(system: SystemClient) -> None:
    petition = system.create_petition("Plant a tree for every newborn")
    name = persona()
    credential = system.credential(name, country="FR", territory="69")

    receipt = system.sign(credential.token, petition.id, client_ip="192.0.2.10")

    assert receipt.outcome == ACCEPTED
    assert receipt.position.topic == system.signatures_topic
    tally = system.settled_tally(petition.id)
    assert tally.total == 1
    assert dict(tally.by_territory) == {"69": 1}
    assert dict(tally.by_country) == {"FR": 1}

    signer = credential.claims.signer
    columns = "signer, signature_id, territory, country, kafka_offset"
    rows = shard_rows(system.cassandra, petition.id, receipt.position.partition, columns)
    assert [(r.signer, r.signature_id, r.territory, r.country) for r in rows] == [
        (signer, receipt.signature_id, "69", "FR")
    ]
    assert rows[0].kafka_offset == receipt.position.offset

    record = system.read_record(receipt.position.partition, receipt.position.offset)
    event = events_pb2.SignatureEvent.FromString(record.value)
    assert event.accepted.signer == signer
    assert event.accepted.signature_id == receipt.signature_id
    assert record.key == hashlib.sha256(f"{petition.id}\x00{signer}".encode()).digest()
    raw_subject = f"dev-persona:{name}".encode()
    assert raw_subject not in record.value
    assert name.encode() not in record.value
    assert b"192.0.2.10" not in record.value  # the client IP is stored only as a keyed hash


def test_the_same_person_counts_once_however_often_they_sign(system: SystemClient) -> None:
    petition = system.create_petition("Keep the night trains")
    alice = system.credential(persona())
    bob = system.credential(persona())

    first = system.sign(alice.token, petition.id)
    again = system.sign(alice.token, petition.id)
    with_new_credential = system.sign(system.credential_for_same(alice).token, petition.id)
    system.sign(bob.token, petition.id)

    assert first.outcome == ACCEPTED
    assert again.outcome == ALREADY_SIGNED
    assert again.signature_id == first.signature_id
    assert with_new_credential.outcome == ALREADY_SIGNED
    assert system.settled_tally(petition.id).total == 2


def test_a_duplicate_that_reaches_the_log_is_not_counted_twice(system: SystemClient) -> None:
    """A producer retry or a replayed event puts the same person on the log
    twice; the tally still counts them once and keeps the first signature."""
    petition = system.create_petition("Free public toilets")
    carol = system.credential(persona(), territory="13")
    receipt = system.sign(carol.token, petition.id)
    original = events_pb2.SignatureEvent.FromString(
        system.read_record(receipt.position.partition, receipt.position.offset).value
    )
    replay = events_pb2.SignatureEvent()
    replay.CopyFrom(original)
    replay.accepted.signature_id = uuid.uuid4().hex
    key = hashlib.sha256(f"{petition.id}\x00{carol.claims.signer}".encode()).digest()

    system.publish_raw(key, original)
    system.publish_raw(key, replay)

    tally = system.settled_tally(petition.id)
    assert tally.total == 1
    assert dict(tally.by_territory) == {"13": 1}
    stored = shard_rows(system.cassandra, petition.id, receipt.position.partition, "signature_id")
    assert [row.signature_id for row in stored] == [receipt.signature_id]


def test_a_retry_with_the_same_idempotency_key_gets_the_same_receipt(system: SystemClient) -> None:
    petition = system.create_petition("Cycle lanes on the ring road")
    dave = system.credential(persona())
    key = f"retry-{uuid.uuid4().hex}"

    first = system.sign(dave.token, petition.id, idempotency_key=key)
    retry = system.sign(dave.token, petition.id, idempotency_key=key)

    assert (retry.outcome, retry.signature_id, retry.position.offset) == (
        ACCEPTED,
        first.signature_id,
        first.position.offset,
    )
    assert system.settled_tally(petition.id).total == 1
