"""The system of record's partitions stay bounded: a petition's rows are
spread over (shard, bucket) Cassandra partitions, shard = the Kafka
partition, bucket = a hash of the signer, so a signer's row is one
partition read; the recount reads them all, agrees with the live tally, and
rebuilds a petition's lost live state from them."""

from __future__ import annotations

import uuid

import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2, identity_pb2, signing_pb2
from servicekit.signature_rows import SIGNATURES_TABLE, signature_bucket
from services.signing.publisher import signature_key
from tests.harness import run_cli
from tests.system import SystemClient

pytestmark = pytest.mark.stack

ACCEPTED = signing_pb2.SignResponse.OUTCOME_ACCEPTED
TERRITORIES = ("13", "75", "69", "2A")


def recount(system: SystemClient, *args: str) -> tuple[int, str]:
    result = run_cli(system.namespace.env(system.stack), "recount", *args)
    return result.returncode, result.stdout + result.stderr


def stored_partitions(system: SystemClient, petition_id: str) -> set[tuple[int, int]]:
    """The (shard, bucket) of every Cassandra partition holding the
    petition's rows, from Cassandra's own list of partitions."""
    return {
        (row.shard, row.bucket)
        for row in system.cassandra.execute(f"SELECT DISTINCT petition_id, shard, bucket FROM {SIGNATURES_TABLE}")
        if row.petition_id == petition_id
    }


def forget_live_state(system: SystemClient, petition_id: str) -> None:
    """Deletes the petition's signer sets and counters from every shard in
    Redis, as a lost Redis would, leaving every other petition alone."""
    with redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"]) as client:
        for partition in system.end_offsets():
            shard = f"tally:{{{system.signatures_topic}:{partition}}}"
            client.delete(f"{shard}:signers:{petition_id}", f"{shard}:counts:{petition_id}")


def test_rows_spread_over_shard_and_bucket_partitions_and_the_recount_reads_them_all(system: SystemClient) -> None:
    petition = system.create_petition("Spread over buckets")
    people = [
        system.credential(f"bk-{uuid.uuid4().hex[:8]}", territory=TERRITORIES[n % len(TERRITORIES)]) for n in range(24)
    ]
    receipts = {person.claims.signer: system.sign(person.token, petition.id) for person in people}
    assert {receipt.outcome for receipt in receipts.values()} == {ACCEPTED}
    settled = system.settled_tally(petition.id)
    assert settled.total == len(people)

    # Each row is where its signer's shard and bucket say, found by one
    # partition read; together they are in far more partitions than the 6
    # a bucketless table had (24 signers over 6 x 64 partitions: fewer than
    # 13 distinct ones is vanishingly unlikely).
    for signer, receipt in receipts.items():
        shard, bucket = receipt.position.partition, signature_bucket(signer)
        row = system.cassandra.execute(
            f"SELECT signature_id FROM {SIGNATURES_TABLE}"
            " WHERE petition_id = %s AND shard = %s AND bucket = %s AND signer = %s",
            (petition.id, shard, bucket, signer),
        ).one()
        assert row is not None, signer
        assert row.signature_id == receipt.signature_id, signer
    partitions = stored_partitions(system, petition.id)
    assert partitions == {(r.position.partition, signature_bucket(s)) for s, r in receipts.items()}
    assert len(partitions) > 12, partitions

    code, output = recount(system, petition.id)
    assert code == 0, output
    assert f"{petition.id}: {len(people)} signatures, no difference" in output

    # The petition's live state lost from Redis: the recount sees the
    # difference and rebuilds it from every shard and bucket.
    forget_live_state(system, petition.id)
    assert system.fresh_tally(petition.id).total == 0
    code, output = recount(system, petition.id)
    assert code == 1, output
    assert f"{petition.id}: DIFFERS: total: stored {len(people)}, live 0" in output
    code, output = recount(system, "--repair", petition.id)
    assert code == 0, output
    assert f"{petition.id}: repaired" in output
    repaired = system.settled_tally(petition.id)
    assert (repaired.total, dict(repaired.by_territory)) == (settled.total, dict(settled.by_territory))

    # The rebuilt signer sets know everyone: a replayed signature of the
    # first person, saying another territory, changes nothing.
    first = people[0]
    now = Timestamp()
    now.GetCurrentTime()
    system.publish_raw(
        signature_key(petition.id, first.claims.signer),
        events_pb2.SignatureEvent(
            accepted=events_pb2.SignatureAccepted(
                signature_id=uuid.uuid4().hex,
                petition_id=petition.id,
                signer=first.claims.signer,
                method=identity_pb2.VERIFICATION_METHOD_OIDC,
                country="FR",
                territory="971",
                signed_at=now,
            )
        ),
    )
    replayed = system.settled_tally(petition.id)
    assert (replayed.total, dict(replayed.by_territory)) == (settled.total, dict(settled.by_territory))
    assert recount(system, petition.id)[0] == 0
