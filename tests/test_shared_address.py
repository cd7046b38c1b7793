"""Several signing processes on one address, as `make up` runs them: the
kernel spreads client connections over them, each answers health checks
on an address of its own, and a process not configured to share cannot
take an address that is in use."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest

from petitions.v1 import signing_pb2, signing_pb2_grpc
from tests.harness import ServiceProcess, free_port, start_service, wait_serving
from tests.system import SystemClient

pytestmark = pytest.mark.stack

ACCEPTED_SAMPLE = 'petitions_signing_sign_outcomes_total{reason="accepted"}'
CONNECTIONS = 16


def accepted(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(ACCEPTED_SAMPLE + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def shared_signing(system: SystemClient) -> Iterator[tuple[str, list[int]]]:
    """Two signing processes sharing one address; yields it and their metrics ports."""
    shared = f"127.0.0.1:{free_port()}"
    env = system.namespace.env(system.stack)
    processes: list[ServiceProcess] = []
    metrics_ports = []
    try:
        for name in ("signing-shared-a", "signing-shared-b"):
            own, metrics_port = f"127.0.0.1:{free_port()}", free_port()
            process = start_service(
                name,
                "services.signing",
                [],
                env,
                {
                    "PETITIONS_GRPC_ADDRESS": shared,
                    "PETITIONS_GRPC_SHARED_ADDRESS": "true",
                    "PETITIONS_GRPC_PROCESS_ADDRESS": own,
                    "PETITIONS_METRICS_PORT": str(metrics_port),
                },
                system.namespace.work_dir / "logs",
            )
            processes.append(process)
            metrics_ports.append(metrics_port)
            # Serving on its own address means this process, not its
            # sibling, is ready.
            wait_serving(process, own)
        yield shared, metrics_ports
    finally:
        for process in processes:
            process.stop()


def test_calls_over_many_connections_reach_every_process_and_all_count(
    system: SystemClient, shared_signing: tuple[str, list[int]]
) -> None:
    shared, metrics_ports = shared_signing
    petition = system.create_petition("Signed through a shared address")
    before = [accepted(port) for port in metrics_ports]
    people = 48
    credentials = [system.credential(f"shared-{uuid.uuid4().hex[:8]}").token for _ in range(people)]

    # One connection per channel (no shared subchannel pool), as separate
    # gateway processes would hold.
    channels = [
        grpc.insecure_channel(shared, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CONNECTIONS)
    ]
    try:
        stubs = [signing_pb2_grpc.SigningStub(channel) for channel in channels]
        calls = [
            stubs[i % CONNECTIONS].Sign.future(
                signing_pb2.SignRequest(
                    credential=token,
                    petition_id=petition.id,
                    idempotency_key=uuid.uuid4().hex,
                    client_ip=f"10.9.{i // 250}.{i % 250 + 1}",
                ),
                timeout=30,
            )
            for i, token in enumerate(credentials)
        ]
        outcomes = [call.result().outcome for call in calls]
    finally:
        for channel in channels:
            channel.close()

    assert outcomes == [signing_pb2.SignResponse.OUTCOME_ACCEPTED] * people
    served = [accepted(port) - earlier for port, earlier in zip(metrics_ports, before, strict=True)]
    assert sum(served) == people
    # 16 connections all hashed to one of two listeners: odds 2 in 65,536.
    assert all(count > 0 for count in served), f"calls per process: {served}"
    assert system.settled_tally(petition.id).total == people


def test_a_process_not_configured_to_share_cannot_take_the_address(
    system: SystemClient, shared_signing: tuple[str, list[int]]
) -> None:
    shared, _ = shared_signing
    process = start_service(
        "signing-unshared",
        "services.signing",
        [],
        system.namespace.env(system.stack),
        {"PETITIONS_GRPC_ADDRESS": shared, "PETITIONS_METRICS_PORT": str(free_port())},
        system.namespace.work_dir / "logs",
    )
    try:
        code = process.process.wait(60)
    finally:
        process.stop()
    assert code != 0
    assert f"cannot bind gRPC address {shared}" in process.log_path.read_text()
