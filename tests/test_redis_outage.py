"""Signing when its Redis dies: a Sign is refused with UNAVAILABLE and retry
advice, nothing reaches Kafka, and signing recovers by itself when Redis
is back. The Redis here is a private redis-server, so the session's
shared one keeps serving every other test."""

from __future__ import annotations

import hashlib
import time
import uuid

import grpc
import pytest

from petitions.v1 import signing_pb2, signing_pb2_grpc
from tests.errors import rejection
from tests.harness import PrivateRedis, free_port, start_service, wait_serving
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def signature_key(petition_id: str, signer: str) -> bytes:
    return hashlib.sha256(f"{petition_id}\x00{signer}".encode()).digest()


def test_sign_without_redis_is_unavailable_publishes_nothing_and_recovers(
    system: SystemClient, private_redis: PrivateRedis
) -> None:
    address = f"127.0.0.1:{free_port()}"
    process = start_service(
        "signing-private-redis",
        "services.signing",
        [],
        system.namespace.env(system.stack),
        {
            "PETITIONS_GRPC_ADDRESS": address,
            "PETITIONS_METRICS_PORT": str(free_port()),
            "PETITIONS_REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/0",
        },
        system.namespace.work_dir / "logs",
    )
    try:
        wait_serving(process, address)
        petition = system.create_petition("Signed while Redis dies")
        before, during = (system.credential(f"redis-{uuid.uuid4().hex[:8]}") for _ in range(2))

        def sign(token: str) -> signing_pb2.SignResponse:
            with grpc.insecure_channel(address) as channel:
                reply: signing_pb2.SignResponse = signing_pb2_grpc.SigningStub(channel).Sign(
                    signing_pb2.SignRequest(
                        credential=token,
                        petition_id=petition.id,
                        idempotency_key=uuid.uuid4().hex,
                        client_ip="10.77.0.1",
                    ),
                    timeout=30,
                )
                return reply

        assert sign(before.token).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED

        private_redis.kill()
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            sign(during.token)
        refused_after = time.monotonic() - began
        found = rejection(raised.value)
        assert (found.code, found.reason) == (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE")
        assert found.retry_after_seconds is not None
        assert refused_after < 15, f"refused only after {refused_after:.1f} s"
        assert system.records_with_key(signature_key(petition.id, during.claims.signer)) == []

        # Redis back (empty: its data died with it). Signing reconnects by
        # itself; the same person now signs, once.
        private_redis.start()
        assert sign(during.token).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED
        assert len(system.records_with_key(signature_key(petition.id, during.claims.signer))) == 1
        assert system.settled_tally(petition.id).total == 2
    finally:
        process.stop()
