"""No acknowledged signature is lost when a broker dies: a three-broker
Kafka (replication factor 3, min.insync.replicas 2) on this host, a signing
process publishing to it, and kill -9 of one broker during a burst."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from deploy.local.components import Kafka, KafkaNode
from deploy.local.layout import Layout
from deploy.local.stack import Stack
from petitions.v1 import events_pb2, signing_pb2, signing_pb2_grpc
from tests.harness import free_port, run_cli, start_service, wait_serving
from tests.system import SystemClient

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Cluster:
    stack: Stack
    bootstrap: str
    names: list[str]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    default = Layout.from_environment()
    layout = Layout(tmp_path_factory.mktemp("kafka-cluster"), default.jar_cache, default.ports)
    nodes = tuple(KafkaNode(node_id, free_port(), free_port()) for node_id in (1, 2, 3))
    components = {
        f"kafka-{n.node_id}": Kafka(name=f"kafka-{n.node_id}", node=n, cluster=nodes, cluster_name="kafka-cluster")
        for n in nodes
    }
    stack = Stack(layout, components)
    names = list(components)
    try:
        stack.up(names)
        yield Cluster(stack, ",".join(f"127.0.0.1:{n.port}" for n in nodes), names)
    finally:
        stack.down(names)


def test_killing_a_broker_loses_no_acknowledged_signature(
    system: SystemClient, cluster: Cluster, tmp_path: Path
) -> None:
    prefix = f"{system.namespace.topic_prefix}c3-"
    env = {
        **system.namespace.env(system.stack),
        "PETITIONS_KAFKA_BOOTSTRAP": cluster.bootstrap,
        "PETITIONS_TOPIC_PREFIX": prefix,
        "PETITIONS_TOPIC_REPLICATION": "3",
    }
    migrated = run_cli(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    address = f"127.0.0.1:{free_port()}"
    signing = start_service(
        "signing-c3",
        "services.signing",
        [],
        env,
        {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": "0"},
        tmp_path,
    )
    try:
        wait_serving(signing, address)
        petition = system.create_petition("Signed while a broker dies")
        # This signing learns petitions from the cluster's petition-state topic.
        system.share_petition(petition.id, cluster.bootstrap, prefix)
        credentials = [system.credential(f"c3-{uuid.uuid4().hex[:8]}").token for _ in range(300)]
        receipts: list[signing_pb2.SignResponse] = []
        failures: list[grpc.StatusCode] = []
        killed_at: list[float] = []
        lock = threading.Lock()

        with grpc.insecure_channel(address) as channel:
            stub = signing_pb2_grpc.SigningStub(channel)

            def sign(token: str) -> None:
                try:
                    receipt = stub.Sign(signing_pb2.SignRequest(credential=token, petition_id=petition.id), timeout=30)
                    with lock:
                        receipts.append(receipt)
                except grpc.RpcError as error:
                    with lock:
                        failures.append(error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN)
                if len(receipts) == 100 and not killed_at:
                    killed_at.append(time.monotonic())
                    cluster.stack.kill(cluster.names[0])

            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(sign, credentials))
    finally:
        signing.stop()

    assert killed_at, "the broker was never killed"
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE}, failures
    assert len(receipts) > 150, f"only {len(receipts)} signatures were acknowledged"
    for receipt in receipts:
        record = system.read_record(
            receipt.position.partition,
            receipt.position.offset,
            bootstrap=cluster.bootstrap,
            topic=f"{prefix}signatures",
        )
        assert events_pb2.SignatureEvent.FromString(record.value).accepted.signature_id == receipt.signature_id
