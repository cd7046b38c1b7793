"""Kafka over TLS with SCRAM-SHA-512, as production's Strimzi listener and
KafkaUser give it: a broker of our own (deploy/local's Kafka with
KafkaSecurity) on free ports in a temporary run directory, shared by this
module's tests. Clients are built from servicekit.stores.kafka_options and
started by start_kafka_client, as every service's are; a wrong password, a
wrong CA or a PLAINTEXT client is a start-up error naming the broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.local.components.kafka import Kafka, KafkaNode, KafkaSecurity
from deploy.local.layout import Layout
from deploy.local.stack import Stack
from deploy.local.tls import LocalCA
from servicekit.settings import CommonSettings
from servicekit.stores import KafkaLoginRefused, idempotent_producer, kafka_options, start_kafka_client
from tests.harness import Namespace, free_port, run_cli, run_module

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(600)]

# A client that fails to start must say so well within this: a hang would
# otherwise look like a slow test.
START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class SecureBroker:
    address: str
    security: KafkaSecurity

    def settings(self, **overrides: object) -> CommonSettings:
        fields: dict[str, object] = {
            "kafka_bootstrap": self.address,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_username": self.security.username,
            "kafka_password_file": self.security.password_file,
            "kafka_ca_file": self.security.ca_file,
            **overrides,
        }
        return CommonSettings(**fields)  # type: ignore[arg-type]

    def env(self, base: dict[str, str], **overrides: str) -> dict[str, str]:
        return {**base, "PETITIONS_KAFKA_BOOTSTRAP": self.address, **self.security.client_env(), **overrides}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    default = Layout.from_environment()
    layout = Layout(tmp_path_factory.mktemp("kafka-sasl"), default.jar_cache, default.ports)
    node = KafkaNode(1, free_port(), free_port())
    security = KafkaSecurity.in_run_dir(layout)
    kafka = Kafka(name="kafka-sasl", node=node, cluster_name="kafka-sasl", security=security)
    stack = Stack(layout, {kafka.name: kafka})
    try:
        # Ready means a TLS handshake and a SCRAM login as the client user.
        stack.up([kafka.name])
        yield SecureBroker(f"127.0.0.1:{node.port}", security)
    finally:
        stack.down([kafka.name])


def wrong_password_file(directory: Path) -> Path:
    path = directory / "wrong.password"
    path.write_text("not-the-password\n")
    return path


async def test_the_users_client_produces_and_consumes_in_a_group(broker: SecureBroker) -> None:
    settings = broker.settings()
    topic = f"login-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await start_kafka_client(admin, settings, "admin client")
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()

    producer = idempotent_producer(settings)
    await start_kafka_client(producer, settings, "producer")
    try:
        sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(20)}
        for key, value in sent.items():
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_options(settings),
        group_id=f"group-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await start_kafka_client(consumer, settings, "consumer")
    received: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=1000)
                received.update((r.key, r.value) for records in batches.values() for r in records if r.key)
        # A group member's commit goes through the group coordinator, over
        # the same authenticated listener.
        await consumer.commit()
    finally:
        await consumer.stop()
    assert received == sent


async def test_a_wrong_password_is_a_start_up_error_naming_the_broker(broker: SecureBroker, tmp_path: Path) -> None:
    settings = broker.settings(kafka_password_file=wrong_password_file(tmp_path))
    producer = AIOKafkaProducer(**kafka_options(settings))
    with pytest.raises(KafkaLoginRefused) as refused:
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            await start_kafka_client(producer, settings, "producer")
    message = str(refused.value)
    assert message.startswith(f"Kafka producer: the broker at {broker.address} refused the login"), message
    assert f"user {broker.security.username!r}, SCRAM-SHA-512 over SASL_SSL" in message, message
    assert "PETITIONS_KAFKA_PASSWORD_FILE" in message, message


async def test_a_ca_that_did_not_sign_the_broker_is_a_start_up_error_naming_the_broker(
    broker: SecureBroker, tmp_path: Path
) -> None:
    other_ca = LocalCA(tmp_path / "other-ca")
    other_ca.ensure()
    settings = broker.settings(kafka_ca_file=other_ca.ca_file)
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    with pytest.raises(KafkaLoginRefused) as refused:
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            await start_kafka_client(admin, settings, "admin client")
    message = str(refused.value)
    assert message.startswith(f"Kafka admin client: the TLS handshake with the broker at {broker.address} failed"), (
        message
    )
    assert "CERTIFICATE_VERIFY_FAILED" in message, message


async def test_a_plaintext_client_on_the_tls_listener_is_told_so(broker: SecureBroker) -> None:
    settings = CommonSettings(kafka_bootstrap=broker.address, kafka_security_protocol="PLAINTEXT")
    producer = AIOKafkaProducer(**kafka_options(settings))
    with pytest.raises(KafkaLoginRefused) as refused:
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            await start_kafka_client(producer, settings, "producer")
    message = str(refused.value)
    assert message.startswith(f"Kafka producer: the broker at {broker.address} speaks TLS"), message
    assert "PETITIONS_KAFKA_SECURITY_PROTOCOL" in message, message


def test_a_service_with_a_wrong_password_exits_saying_why(
    broker: SecureBroker, stack: CommonSettings, namespace: Namespace, tmp_path: Path
) -> None:
    env = broker.env(
        namespace.env(stack),
        PETITIONS_KAFKA_PASSWORD_FILE=str(wrong_password_file(tmp_path)),
        PETITIONS_TOPIC_PREFIX=f"{namespace.topic_prefix}login-",
        PETITIONS_GRPC_ADDRESS="127.0.0.1:0",
        PETITIONS_METRICS_PORT="0",
    )
    secrets = run_cli(env, "dev-secrets")  # only the missing files
    assert secrets.returncode == 0, secrets.stderr
    # Signing starts its idempotent producer through start_kafka_client, as
    # every service starts its Kafka clients.
    result = run_module("services.signing", env, timeout=START_TIMEOUT_SECONDS * 2)
    assert result.returncode != 0, result.stdout
    expected = f"Kafka producer: the broker at {broker.address} refused the login"
    assert expected in result.stderr, result.stderr
    assert "PETITIONS_KAFKA_PASSWORD_FILE" in result.stderr, result.stderr
    # The reason, not a traceback of how aiokafka gave up.
    assert "Traceback" not in result.stderr, result.stderr
