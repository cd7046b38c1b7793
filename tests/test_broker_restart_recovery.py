"""Signing recovers fast after its broker crashes: a private single Kafka
broker on free ports, a signing process of its own publishing to it, kill -9
of the broker under a steady signing load and its restart 3 s later on the
same data directory. While the broker is away every Sign answers
UNAVAILABLE within a bound (never a client deadline); once the broker
answers a metadata request again, signing accepts within 2 s; and every
acknowledged signature is in the log afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.local.components import Kafka, KafkaNode
from deploy.local.layout import Layout
from deploy.local.stack import Stack
from petitions.v1 import events_pb2, signing_pb2, signing_pb2_grpc
from services.signing.settings import SigningSettings
from tests.errors import rejection
from tests.harness import ServiceProcess, free_port, run_cli, start_service, wait_serving
from tests.system import SystemClient, topic_partitions
from tests.waiting import eventually

# Run alone, the test starts the session's services and a private broker
# (twice: a JVM start is 10 s on an idle 2-core machine, 30 s when other
# test sessions load it), then signs for about 10 s around the outage:
# 100 s idle, 180 s measured under a load average of 8. 300 s lets a loaded
# machine finish and still stops a broker that never comes back.
pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(300)]
# (The second test reuses the broker and signs a few times: about 20 s.)

# What the outside probe used: a client that gives up after 10 s.
CLIENT_DEADLINE_SECONDS = 10.0
# The broker stays down this long after kill -9: the probe's scenario.
OUTAGE_SECONDS = 3.0
# While the broker is away an answer comes well before the client's
# deadline: signing gives up once Kafka has acknowledged nothing for
# publish_stall_seconds (2 s), plus room for a busy 2-core machine.
OUTAGE_ANSWER_BOUND_SECONDS = SigningSettings.model_fields["publish_stall_seconds"].default + 2
# Issue 13, item 9: accepting again within 2 s of the broker being ready.
RECOVERY_BOUND_SECONDS = 2.0
# People signing: 20 before the crash, a few through the outage (each
# retries until accepted), 10 after it, and spares.
CREDENTIALS = 80
# Signs in flight at once: a modest, steady load, as in test_broker_outage.
SIGNERS = 4
# Between two calls of one signer; keeps the load steady and each signer's
# calls under the test rate limits while the broker is away.
PAUSE_SECONDS = 0.1


@dataclass(frozen=True)
class Broker:
    stack: Stack
    kafka: Kafka
    bootstrap: str

    def ready(self) -> bool:
        """The local stack's own readiness check: a metadata request answered."""
        return self.kafka.ready(self.stack.layout)


@dataclass(frozen=True)
class Answer:
    began: float
    ended: float
    code: grpc.StatusCode
    receipt: signing_pb2.SignResponse | None

    @property
    def seconds(self) -> float:
        return self.ended - self.began


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    default = Layout.from_environment()
    layout = Layout(tmp_path_factory.mktemp("kafka-restart"), default.jar_cache, default.ports)
    node = KafkaNode(1, free_port(), free_port())
    kafka = Kafka(name="kafka", node=node, cluster=(node,), cluster_name="kafka-restart")
    stack = Stack(layout, {"kafka": kafka})
    try:
        stack.up(["kafka"])
        yield Broker(stack, kafka, f"127.0.0.1:{node.port}")
    finally:
        stack.down(["kafka"])


def utc(wall: float) -> str:
    """A wall-clock time as the services' logs write it, to find it there."""
    return datetime.fromtimestamp(wall, UTC).strftime("%H:%M:%S.%f")[:-3] + " UTC"


def client_ip() -> str:
    """An address of its own for each call (the test limits per address are tight)."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


async def _records_at(bootstrap: str, topic: str) -> dict[tuple[int, int], bytes]:
    """Every record of the topic, by (partition, offset), read to its end."""
    partitions = (await topic_partitions(bootstrap, [topic]))[0]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[tuple[int, int], bytes] = {}
    try:
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        consumer.assign(list(remaining))
        await consumer.seek_to_beginning(*remaining)
        while remaining:
            batches = await consumer.getmany(timeout_ms=5000)
            if not batches:
                raise AssertionError(f"could not read {sorted(remaining)} to the end")
            for tp, records in batches.items():
                found.update({(r.partition, r.offset): r.value or b"" for r in records})
                if records[-1].offset + 1 >= ends[TopicPartition(tp.topic, tp.partition)]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


def share_petition(system: SystemClient, petition_id: str, broker: Broker, prefix: str) -> None:
    """The petition's latest state, copied to the private broker."""
    system.share_petition(petition_id, broker.bootstrap, prefix)


@contextlib.contextmanager
def signing_on(
    system: SystemClient, broker: Broker, tmp_path: Path, name: str
) -> Iterator[tuple[str, str, ServiceProcess]]:
    """A signing process of its own publishing to the private broker, with
    signing's own publish timeout (10 s), as the probe ran it: the test
    sessions' 3 s would hide a wait as long as a client's deadline. Yields
    its address and its topic prefix."""
    prefix = f"{system.namespace.topic_prefix}{name}-"
    env = {
        **system.namespace.env(system.stack),
        "PETITIONS_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PETITIONS_TOPIC_PREFIX": prefix,
        "PETITIONS_TOPIC_REPLICATION": "1",
    }
    env.pop("PETITIONS_PUBLISH_TIMEOUT_SECONDS")
    migrated = run_cli(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    address = f"127.0.0.1:{free_port()}"
    signing = start_service(
        f"signing-{name}",
        "services.signing",
        [],
        env,
        {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": "0"},
        tmp_path,
    )
    try:
        wait_serving(signing, address)
        yield address, prefix, signing
    finally:
        signing.stop()


def test_signing_accepts_within_2_s_of_a_crashed_broker_being_ready(
    system: SystemClient,
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()
    with signing_on(system, broker, tmp_path, "restart") as (address, prefix, signing):
        petition = system.create_petition("Signed while the broker crashes")
        share_petition(system, petition.id, broker, prefix)
        with ThreadPoolExecutor(max_workers=8) as pool:
            credentials = list(
                pool.map(lambda n: system.credential(f"restart-{n}-{uuid.uuid4().hex[:6]}").token, range(CREDENTIALS))
            )
        unused = iter(credentials)

        with grpc.insecure_channel(address) as channel:
            stub = signing_pb2_grpc.SigningStub(channel)

            def sign_steadily() -> None:
                """One person after another; an UNAVAILABLE person retries
                with the same idempotency key, as the API asks."""
                while not stop.is_set():
                    with lock:
                        token = next(unused, None)
                    if token is None:
                        return
                    key = uuid.uuid4().hex
                    while not stop.is_set():
                        began = time.monotonic()
                        try:
                            receipt = stub.Sign(
                                signing_pb2.SignRequest(
                                    credential=token,
                                    petition_id=petition.id,
                                    idempotency_key=key,
                                    client_ip=client_ip(),
                                ),
                                timeout=CLIENT_DEADLINE_SECONDS,
                            )
                            code, got = grpc.StatusCode.OK, receipt
                        except grpc.RpcError as error:
                            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                            got = None
                        with lock:
                            answers.append(Answer(began, time.monotonic(), code, got))
                        # Time is the subject: the pace of the load (see
                        # PAUSE_SECONDS), not a wait for any state.
                        time.sleep(PAUSE_SECONDS)
                        if code == grpc.StatusCode.OK:
                            break

            def accepted_after(moment: float) -> list[Answer]:
                with lock:
                    return [a for a in answers if a.ended > moment and a.code == grpc.StatusCode.OK]

            def ready_since() -> float | None:
                """When a probe that found the broker ready began: a probe
                that began before that moment failed."""
                probed = time.monotonic()
                return probed if broker.ready() else None

            signers = [threading.Thread(target=sign_steadily) for _ in range(SIGNERS)]
            for thread in signers:
                thread.start()
            starter = ThreadPoolExecutor(max_workers=1)
            try:
                eventually(
                    lambda: len(accepted_after(0)) >= 20,
                    30,
                    interval=0.05,
                    message="signing never accepted before the crash",
                )
                killed_at, killed_wall = time.monotonic(), time.time()
                assert broker.stack.kill("kafka"), "the private broker was not running"
                # The outage's length is the scenario being reproduced (the
                # probe restarted the broker 3 s after kill -9), not a wait
                # for something to happen.
                time.sleep(max(0.0, killed_at + OUTAGE_SECONDS - time.monotonic()))
                restarted_at = time.monotonic()
                restart = starter.submit(broker.stack.up, ["kafka"])
                # Ready as the stack defines it: it answers a metadata request.
                ready_at = eventually(ready_since, 120, interval=0.05, message="the broker was not ready")
                # Ten people accepted after it, or 30 s since it was ready:
                # the assertions below judge recovery, with the figures
                # printed first, so running out of time is no failure here.
                with contextlib.suppress(AssertionError):
                    eventually(
                        lambda: len(accepted_after(ready_at)) >= 10,
                        max(0.0, ready_at + 30 - time.monotonic()),
                        interval=0.05,
                        message="10 accepted after the broker was ready",
                    )
                restart.result()
            finally:
                stop.set()
                for thread in signers:
                    thread.join()
                starter.shutdown()

    after_ready = accepted_after(ready_at)
    first_accepted = min((a.ended for a in after_ready), default=float("inf")) - ready_at
    # Every answer that waited on the missing broker, including those in
    # flight at the crash; those asked after it and answered before the
    # broker was back can only be refusals.
    outage = [a for a in answers if a.ended > killed_at and a.began < ready_at]
    refused = [a for a in outage if a.began > killed_at and a.ended < ready_at]
    longest = max((a.seconds for a in outage), default=0.0)
    codes = sorted({a.code.name for a in answers})
    figures = (
        f"broker killed at {utc(killed_wall)}, restarted {restarted_at - killed_at:.2f} s later, ready"
        f" {ready_at - restarted_at:.2f} s after its restart ({utc(killed_wall + ready_at - killed_at)});"
        f" ready -> first ACCEPTED {first_accepted:.2f} s; longest answer during the outage {longest:.2f} s"
        f" over {len(outage)} answers; codes seen {codes}"
    )
    with capsys.disabled():
        print(f"\n{figures}\n(signing's log: {signing.log_path})")

    assert outage, "no Sign was answered while the broker was away"
    assert {a.code for a in answers} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, figures
    assert all(a.code == grpc.StatusCode.UNAVAILABLE for a in refused), figures
    assert longest < OUTAGE_ANSWER_BOUND_SECONDS, figures
    assert first_accepted <= RECOVERY_BOUND_SECONDS, figures

    acknowledged = [a.receipt for a in answers if a.receipt is not None]
    records = asyncio.run(_records_at(broker.bootstrap, f"{prefix}signatures"))
    for receipt in acknowledged:
        value = records.get((receipt.position.partition, receipt.position.offset))
        assert value is not None, f"acknowledged signature {receipt.signature_id} is not in the log"
        assert events_pb2.SignatureEvent.FromString(value).accepted.signature_id == receipt.signature_id


def test_a_sign_its_caller_gave_up_on_leaves_no_claim_behind(
    system: SystemClient, broker: Broker, tmp_path: Path
) -> None:
    """A caller whose deadline cuts a Sign off while Kafka is silent must not
    hold the person's claim: their retry is answered for itself
    (BROKER_UNAVAILABLE once the broker stays silent past the stall, then
    ACCEPTED once it speaks), not SIGNATURE_IN_PROGRESS until the claim
    expires. The broker is frozen (SIGSTOP), not killed: the connection stays
    open and nothing is acknowledged."""
    pid = next(item.pid for item in broker.stack.status() if item.name == "kafka")
    assert pid is not None
    with signing_on(system, broker, tmp_path, "cancel") as (address, prefix, _), contextlib.ExitStack() as thaw:
        # Whatever happens, the broker is not left frozen for the next test
        # (SIGCONT to a running process changes nothing).
        thaw.callback(os.kill, pid, signal.SIGCONT)
        petition = system.create_petition("Signed by an impatient caller")
        share_petition(system, petition.id, broker, prefix)
        token = system.credential(f"impatient-{uuid.uuid4().hex[:8]}").token
        request = signing_pb2.SignRequest(
            credential=token, petition_id=petition.id, idempotency_key=uuid.uuid4().hex, client_ip=client_ip()
        )
        with grpc.insecure_channel(address) as channel:
            stub = signing_pb2_grpc.SigningStub(channel)
            # Connected and the producer's metadata fresh: a first person signs.
            first = system.credential(f"impatient-{uuid.uuid4().hex[:8]}").token
            stub.Sign(signing_pb2.SignRequest(credential=first, petition_id=petition.id), timeout=10)

            os.kill(pid, signal.SIGSTOP)
            with pytest.raises(grpc.RpcError) as cut_off:
                stub.Sign(request, timeout=0.5)
            assert cut_off.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as retried:
                stub.Sign(request, timeout=CLIENT_DEADLINE_SECONDS)
            refusal = rejection(retried.value)
            assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNAVAILABLE, "BROKER_UNAVAILABLE"), refusal
            assert time.monotonic() - began < OUTAGE_ANSWER_BOUND_SECONDS, refusal

            os.kill(pid, signal.SIGCONT)
            receipt = stub.Sign(request, timeout=CLIENT_DEADLINE_SECONDS)
            assert receipt.outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED
            # The same key again: this signature, answered from the ledger.
            again = stub.Sign(request, timeout=CLIENT_DEADLINE_SECONDS)
            assert (again.outcome, again.signature_id) == (receipt.outcome, receipt.signature_id)
