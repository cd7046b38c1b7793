"""One person, one signature, whatever the concurrency: many Sign calls of
the same person race through two signing processes."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
import redis

from petitions.v1 import signing_pb2, signing_pb2_grpc
from tests.harness import ServiceProcess, free_port, run_cli, start_service, wait_serving
from tests.stored_signatures import petition_rows
from tests.system import SystemClient

pytestmark = pytest.mark.stack

ACCEPTED = signing_pb2.SignResponse.OUTCOME_ACCEPTED
ALREADY_SIGNED = signing_pb2.SignResponse.OUTCOME_ALREADY_SIGNED


@pytest.fixture(scope="module")
def second_signing(system: SystemClient) -> Iterator[signing_pb2_grpc.SigningStub]:
    address = f"127.0.0.1:{free_port()}"
    env = system.namespace.env(system.stack)
    process: ServiceProcess = start_service(
        "signing-b",
        "services.signing",
        [],
        env,
        {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": "0"},
        system.namespace.work_dir / "logs",
    )
    try:
        wait_serving(process, address)
        with grpc.insecure_channel(address) as channel:
            yield signing_pb2_grpc.SigningStub(channel)
    finally:
        process.stop()


def test_two_hundred_concurrent_signs_of_one_person_make_one_signature(
    system: SystemClient, second_signing: signing_pb2_grpc.SigningStub
) -> None:
    petition = system.create_petition("Race to sign")
    credential = system.credential(f"racer-{uuid.uuid4().hex[:8]}")
    stubs = [system.signing, second_signing]

    calls = [
        stubs[i % 2].Sign.future(
            signing_pb2.SignRequest(
                credential=credential.token, petition_id=petition.id, idempotency_key=f"race-{uuid.uuid4().hex}"
            ),
            timeout=60,
        )
        for i in range(200)
    ]
    outcomes = Counter(call.result().outcome for call in calls)

    assert outcomes == {ACCEPTED: 1, ALREADY_SIGNED: 199}
    assert system.settled_tally(petition.id).total == 1
    key = hashlib.sha256(f"{petition.id}\x00{credential.claims.signer}".encode()).digest()
    assert len(system.records_with_key(key)) == 1, "exactly one event reaches the log"


def test_a_retry_with_the_same_key_publishes_nothing_new(system: SystemClient) -> None:
    petition = system.create_petition("Retry once")
    credential = system.credential(f"retrier-{uuid.uuid4().hex[:8]}")
    key = f"retry-{uuid.uuid4().hex}"

    answers = [system.sign(credential.token, petition.id, idempotency_key=key) for _ in range(3)]

    assert {(a.outcome, a.signature_id, a.position.offset) for a in answers} == {
        (ACCEPTED, answers[0].signature_id, answers[0].position.offset)
    }
    log_key = hashlib.sha256(f"{petition.id}\x00{credential.claims.signer}".encode()).digest()
    assert len(system.records_with_key(log_key)) == 1


@pytest.mark.destructive
def test_the_race_stays_one_signature_when_redis_is_flushed_in_the_middle(
    system: SystemClient, second_signing: signing_pb2_grpc.SigningStub
) -> None:
    """With the fast ledger gone mid-race, later calls publish again; the
    tally's per-partition dedup, rebuilt from Cassandra by the recount,
    still counts the person once."""
    petition = system.create_petition("Race through a Redis loss")
    credential = system.credential(f"racer-{uuid.uuid4().hex[:8]}")
    stubs = [system.signing, second_signing]
    store = redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])

    def sign(i: int) -> grpc.Future[signing_pb2.SignResponse]:
        request = signing_pb2.SignRequest(
            credential=credential.token, petition_id=petition.id, idempotency_key=f"race-{uuid.uuid4().hex}"
        )
        return stubs[i % 2].Sign.future(request, timeout=60)

    first_half = [sign(i) for i in range(100)]
    first_half[0].result()
    store.flushdb()
    second_half = [sign(i) for i in range(100, 200)]
    outcomes = Counter(call.result().outcome for call in first_half + second_half)

    assert sum(outcomes.values()) == 200
    assert outcomes[ACCEPTED] >= 1
    system.settled_tally(petition.id)
    repaired = run_cli(system.namespace.env(system.stack), "recount", "--repair", petition.id)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert system.settled_tally(petition.id).total == 1
    rows = petition_rows(system.cassandra, petition.id, "signer")
    assert [row.signer for row in rows] == [credential.claims.signer]
