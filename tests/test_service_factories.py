"""Services are built by one factory, the one their main() runs: signing
built in this test's event loop through `create_server(settings)` on port 0,
with the session's settings, serves (health, Sign); leaving the factory's
block unwinds it in reverse order: the server drains first, so Signs in
flight still get their answers from Kafka (the producer is still open), and
afterwards nothing of it is left: its port refuses connections, no task of
it runs, and no connection it opened to a store or to identity is open."""

from __future__ import annotations

import asyncio
import socket
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from petitions.v1 import signing_pb2, signing_pb2_grpc
from services.signing.server import create_server
from services.signing.settings import SigningSettings
from tests.system import SystemClient
from tests.waiting import eventually_async

pytestmark = pytest.mark.stack

ACCEPTED = signing_pb2.SignResponse.OUTCOME_ACCEPTED
IN_FLIGHT = 5
# Each send waits this long in the producer for more, so the Signs are still
# waiting on Kafka when the test leaves the factory's block.
LINGER_MS = 1500


@pytest.fixture
def signing_settings(system: SystemClient, monkeypatch: pytest.MonkeyPatch) -> SigningSettings:
    """The session's signing settings, read from the environment exactly as
    the signing process reads them, on a port of its own."""
    for name, value in system.namespace.env(system.stack).items():
        if name.startswith("PETITIONS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PETITIONS_GRPC_ADDRESS", "127.0.0.1:0")
    monkeypatch.setenv("PETITIONS_PRODUCER_LINGER_MS", str(LINGER_MS))
    # Kafka acknowledges nothing during a linger: that is no stall.
    monkeypatch.setenv("PETITIONS_PUBLISH_STALL_SECONDS", "10")
    monkeypatch.setenv("PETITIONS_PUBLISH_TIMEOUT_SECONDS", "10")
    return SigningSettings()


def _remote_ports() -> dict[int, int]:
    """Every TCP socket of this host by inode, with its remote port."""
    ports: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            ports[int(fields[9])] = int(fields[2].rsplit(":", 1)[1], 16)
    return ports


def _connections_to(ports: set[int]) -> set[int]:
    """The inodes of this process's sockets connected to one of ports."""
    remote = _remote_ports()
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue  # closed while listed
        if target.startswith("socket:["):
            inode = int(target[len("socket:[") : -1])
            if remote.get(inode) in ports:
                inodes.add(inode)
    return inodes


def _refuses(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


async def test_signing_built_in_process_serves_then_unwinds_in_reverse_order(
    system: SystemClient, signing_settings: SigningSettings
) -> None:
    petition = system.create_petition("Built by its factory")
    # One person each: the test limits Sign calls per person.
    credentials = [system.credential(f"factory-{uuid.uuid4().hex[:8]}").token for _ in range(IN_FLIGHT)]
    settings = signing_settings
    store_ports = {
        urlsplit(settings.redis_url).port or 6379,
        int(settings.kafka_bootstrap.rsplit(":", 1)[1]),
        settings.cassandra_port,
        int(settings.identity_address.rsplit(":", 1)[1]),
    }
    connections_before = _connections_to(store_ports)
    tasks_before = asyncio.all_tasks()

    server_block = AsyncExitStack()
    running = await server_block.enter_async_context(create_server(settings))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="petitions.v1.Signing"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert _connections_to(store_ports) - connections_before, "it connected to nothing"
        stub = signing_pb2_grpc.SigningStub(channel)
        signs = [
            asyncio.ensure_future(
                stub.Sign(
                    signing_pb2.SignRequest(
                        credential=token,
                        petition_id=petition.id,
                        idempotency_key=f"factory-{uuid.uuid4().hex}",
                        client_ip=f"198.51.100.{index + 1}",
                    ),
                    timeout=30,
                )
            )
            for index, token in enumerate(credentials)
        ]
        await eventually_async(
            lambda: REGISTRY.get_sample_value("petitions_signing_publishes_in_flight") == IN_FLIGHT,
            10,
            message=f"{IN_FLIGHT} Signs waiting on Kafka",
        )
        # Leaves the factory's block with every Sign waiting on Kafka; the
        # client's channel stays open to receive the answers.
        await server_block.aclose()
        answers = await asyncio.gather(*signs)
    finally:
        await server_block.aclose()
        await channel.close()

    assert [answer.outcome for answer in answers] == [ACCEPTED] * IN_FLIGHT
    assert all(answer.position.topic == settings.signatures_topic for answer in answers)
    assert _refuses(running.port), "the port still accepts connections"
    assert asyncio.all_tasks() - tasks_before == set(), "tasks of the service are still running"
    left = _connections_to(store_ports) - connections_before
    assert not left, f"{len(left)} connections to the stores or identity left open"
