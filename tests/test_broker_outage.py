"""Kafka stops while people sign: callers learn it promptly (UNAVAILABLE,
within a bounded time), and every signature that was acknowledged is in the
log once Kafka is back. Stops and restarts the shared local broker."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import grpc
import pytest

from petitions.v1 import events_pb2, signing_pb2
from tests.harness import PUBLISH_TIMEOUT_SECONDS, REPO
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = [pytest.mark.stack, pytest.mark.slow]

# The longest an answer may take while the broker is away: the publish
# timeout, plus room for a busy 2-core machine.
BOUND_SECONDS = PUBLISH_TIMEOUT_SECONDS + 3


@dataclass(frozen=True)
class Attempt:
    started: float
    seconds: float
    code: grpc.StatusCode
    receipt: signing_pb2.SignResponse | None


def stack(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.local.stack", *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broker_outage_loses_no_acknowledged_signature(system: SystemClient) -> None:
    petition = system.create_petition("Signed through an outage")
    credentials = [system.credential(f"outage-{uuid.uuid4().hex[:8]}").token for _ in range(150)]
    attempts: list[Attempt] = []
    stop = threading.Event()

    def sign_continuously() -> None:
        for token in credentials:
            if stop.is_set():
                return
            began = time.monotonic()
            try:
                receipt = system.sign(token, petition.id)
                attempts.append(Attempt(began, time.monotonic() - began, grpc.StatusCode.OK, receipt))
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                attempts.append(Attempt(began, time.monotonic() - began, code, None))
            # Time is the subject: a pause between calls keeps the load a
            # modest, steady rate, not a wait for any state.
            time.sleep(0.05)

    def recovered() -> bool:
        return any(a.started > outage_ended and a.code == grpc.StatusCode.OK for a in attempts)

    signer = threading.Thread(target=sign_continuously)
    signer.start()
    try:
        eventually(lambda: len(attempts) >= 10, 60, interval=0.05, message="10 Signs answered before the outage")
        outage_began = time.monotonic()
        stack("down", "kafka")
        # Time is the subject: the broker stays away for two publish
        # timeouts, so calls made meanwhile must give up, not wait.
        time.sleep(PUBLISH_TIMEOUT_SECONDS * 2)
        stack("up", "kafka")
        outage_ended = time.monotonic()
        # A timeout here is the test's verdict too (the remaining checks
        # judge the outage, which is moot if signing never came back).
        eventually(recovered, 60, interval=0.2, message="signing never recovered")
    finally:
        stop.set()
        signer.join()

    during = [a for a in attempts if outage_began < a.started < outage_ended]
    assert any(a.code == grpc.StatusCode.UNAVAILABLE for a in during), "nobody noticed the outage"
    assert {a.code for a in attempts} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert max(a.seconds for a in attempts) < BOUND_SECONDS

    # Not just one lucky call: signing is healthy again for good (a broken
    # idempotent producer would fail every call from here on).
    after = system.create_petition("Signed after the outage")
    for _ in range(20):
        fresh = system.credential(f"after-{uuid.uuid4().hex[:8]}").token
        assert system.sign(fresh, after.id).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED

    acknowledged = [a.receipt for a in attempts if a.receipt is not None]
    for receipt in acknowledged:
        record = system.read_record(receipt.position.partition, receipt.position.offset)
        assert events_pb2.SignatureEvent.FromString(record.value).accepted.signature_id == receipt.signature_id
    # Unacknowledged sends may still have reached the log: they count too
    # (their person may retry and get ALREADY_SIGNED), but never twice.
    total = system.settled_tally(petition.id, timeout=120).total
    assert len(acknowledged) <= total <= len(attempts)
