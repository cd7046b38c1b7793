"""Kafka (KRaft): combined broker and controller nodes from the Maven jars."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import ssl
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploy.local.components.base import java, java_server_directories, port_open
from deploy.local.fetch import fetch_jars
from deploy.local.layout import Layout
from deploy.local.processes import StartFailed
from deploy.local.tls import LocalCA

KAFKA_PROPERTIES = """\
# Written by deploy/local/components/kafka.py: one combined broker and controller (KRaft).
process.roles=broker,controller
node.id={node_id}
# A static quorum (still supported in 4.x): every node of a cluster is
# formatted alike, with no --standalone/--initial-controllers step, and a
# killed node rejoins as the same voter.
controller.quorum.voters={voters}
{listeners}
controller.listener.names=CONTROLLER
log.dirs={log_dir}
num.partitions=6
# Internal topics cannot have more replicas than there are brokers.
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=4
# Topics are created by `petitions migrate`, with their settings, never by accident.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# After kill -9 the restarted node's controller still holds the dead
# incarnation's registration and refuses the new one (DUPLICATE_BROKER_REGISTRATION)
# until that session expires: with the default 9 s that wait was the longest
# part of a restart. 4 s still allows three missed heartbeats (every 1 s).
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# A broker that has not registered with the controller quorum within this
# shuts itself down (default 60 s). Nodes of a cluster starting together on
# two busy cores took longer than that to elect a controller, and exited.
initial.broker.registration.timeout.ms=300000
"""

PLAINTEXT_LISTENERS = """\
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
"""

# The client listener as a Strimzi listener with `tls: true` and
# `authentication: scram-sha-512` gives it. Replication between brokers uses
# it too, as the broker's own SCRAM user: no third port, and every byte of
# signature data between processes is encrypted. The controller listener
# stays PLAINTEXT on the loopback: KRaft cannot check SCRAM there (the
# credentials live in the metadata log the controllers serve), and it
# carries only cluster metadata, never a client's data or password.
# No authorizer: a user who logs in may do everything (one user per system,
# as with one KafkaUser; ACLs are production's, through Strimzi).
SECURE_LISTENERS = """\
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms={mechanism}
sasl.mechanism.inter.broker.protocol={mechanism}
listener.name.sasl_ssl.{mechanism_lower}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \\
  required username="{broker_username}" password="{broker_password}";
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca_file}
ssl.client.auth=none
"""

# Kafka 4 logs through log4j2 (-Dlog4j2.configurationFile). Properties, not
# YAML: log4j2 reads properties itself, YAML only through an optional
# Jackson module it does not bring.
KAFKA_LOG4J2 = """\
status = warn
name = kafka
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
"""


@dataclass(frozen=True)
class KafkaNode:
    """One node of a multi-broker cluster (the no-loss tests run three)."""

    node_id: int
    port: int
    controller_port: int


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SCRAM-SHA-512 on a node's client listener, as a Strimzi
    KafkaUser gives: a certificate from the project's local CA, and SCRAM
    users created when the storage is formatted. Everything lives in
    `secrets_dir` (made on first use, private files 0600); the nodes of one
    cluster share one KafkaSecurity, so one CA and one password each.

    What a client needs: `ca_file`, `username`, `password_file` (or all of
    it as environment: `client_env()`)."""

    secrets_dir: Path
    username: str = "petitions"
    # The brokers' own user, for replication between them.
    broker_username: str = "kafka-broker"
    mechanism: str = "SCRAM-SHA-512"

    @classmethod
    def in_run_dir(cls, layout: Layout, username: str = "petitions") -> KafkaSecurity:
        return cls(layout.run_dir / "secrets" / "kafka", username)

    @property
    def _ca(self) -> LocalCA:
        return LocalCA(self.secrets_dir)

    @property
    def ca_file(self) -> Path:
        return self._ca.ca_file

    @property
    def password_file(self) -> Path:
        return self.secrets_dir / f"{self.username}.password"

    @property
    def broker_password_file(self) -> Path:
        return self.secrets_dir / f"{self.broker_username}.password"

    @property
    def keystore_file(self) -> Path:
        """The brokers' key and certificate chain (PEM); every node listens
        on 127.0.0.1, so one certificate serves them all."""
        return self.secrets_dir / "kafka-broker.pem"

    def ensure(self) -> None:
        """The CA, the brokers' certificate and both passwords, each made
        only if missing: a restarted node, or a client holding the CA and
        password from before, keeps working."""
        self._ca.server_certificate(self.keystore_file.stem)
        for path in (self.password_file, self.broker_password_file):
            _ensure_password(path)

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def client_env(self) -> dict[str, str]:
        """The PETITIONS_* settings of a service that logs in as `username`."""
        return {
            "PETITIONS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PETITIONS_KAFKA_SASL_MECHANISM": self.mechanism,
            "PETITIONS_KAFKA_USERNAME": self.username,
            "PETITIONS_KAFKA_PASSWORD_FILE": str(self.password_file),
            "PETITIONS_KAFKA_CA_FILE": str(self.ca_file),
        }

    def listeners(self, port: int, controller_port: int) -> str:
        return SECURE_LISTENERS.format(
            port=port,
            controller_port=controller_port,
            mechanism=self.mechanism,
            mechanism_lower=self.mechanism.lower(),
            broker_username=self.broker_username,
            broker_password=self.broker_password_file.read_text().strip(),
            keystore=self.keystore_file,
            ca_file=self.ca_file,
        )

    def format_arguments(self) -> list[str]:
        """The storage tool's --add-scram for each user: in KRaft the SCRAM
        credentials are metadata records, and these are in the cluster's
        first metadata, so the brokers can replicate (and clients log in)
        from the first start."""
        arguments = []
        for name, path in ((self.username, self.password_file), (self.broker_username, self.broker_password_file)):
            arguments += ["--add-scram", f"{self.mechanism}=[name={name},password={path.read_text().strip()}]"]
        return arguments


def _ensure_password(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        # Hex: nothing the storage tool's [name=...,password=...] syntax or
        # a JAAS string would need quoted.
        file.write(secrets.token_hex(24) + "\n")
    partial.rename(path)


@dataclass(frozen=True)
class Kafka:
    """A combined broker and controller. Alone by default (the local stack);
    with `cluster`, one of several nodes sharing a controller quorum."""

    name: str = "kafka"
    # About 20-45 s on an idle 2-core machine; three minutes and more when
    # other JVMs (a test session's second stack, a cluster) share the cores.
    start_timeout: float = 300.0
    stop_timeout: float = 30.0
    # A small broker for a 2-core laptop or CI machine.
    heap: str = "512m"
    node: KafkaNode | None = None
    cluster: tuple[KafkaNode, ...] = ()
    cluster_name: str = "kafka"
    # TLS + SCRAM on the client listener; PLAINTEXT without it.
    security: KafkaSecurity | None = None

    def fetch(self, layout: Layout) -> None:
        fetch_jars(layout, "kafka")

    def _node(self, layout: Layout) -> KafkaNode:
        return self.node or KafkaNode(1, layout.ports.kafka, layout.ports.kafka_controller)

    def prepare(self, layout: Layout) -> list[str]:
        jars, conf, data = java_server_directories(layout, self.name, software="kafka")
        node = self._node(layout)
        nodes = self.cluster or (node,)
        properties = conf / "server.properties"
        if self.security is None:
            listeners = PLAINTEXT_LISTENERS.format(port=node.port, controller_port=node.controller_port)
        else:
            self.security.ensure()
            listeners = self.security.listeners(node.port, node.controller_port)
        # 0600: with security it holds the brokers' password.
        _write_private_text(
            properties,
            KAFKA_PROPERTIES.format(
                node_id=node.node_id,
                voters=",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes),
                listeners=listeners.rstrip("\n"),
                log_dir=data / "log",
                replication=min(3, len(nodes)),
                # With three replicas, an acknowledged write is on two of them.
                min_isr=2 if len(nodes) >= 3 else 1,
            ),
        )
        (conf / "log4j2.properties").write_text(KAFKA_LOG4J2)
        jvm = [
            java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={layout.logs()}",
            "-cp",
            f"{jars}/*",
        ]
        if not (data / "log" / "meta.properties").exists():
            self._format(jvm, properties, _cluster_id(layout.data(self.cluster_name) / "cluster.id"))
        return [*jvm, "kafka.Kafka", str(properties)]

    def _format(self, jvm: list[str], properties: Path, cluster_id: str) -> None:
        """Formats the log directory; done once, as a second format would
        wipe the metadata log."""
        scram = self.security.format_arguments() if self.security else []
        result = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties), *scram],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StartFailed(f"kafka: formatting its storage failed:\n{result.stdout}{result.stderr}")

    def ready(self, layout: Layout) -> bool:
        """A metadata request answered; with security, after a TLS handshake
        and a SCRAM login as the client user, so ready means usable."""
        port = self._node(layout).port
        if not port_open(port):
            return False
        return asyncio.run(_kafka_has_broker(f"127.0.0.1:{port}", self.security))

    def port(self, layout: Layout) -> int:
        return self._node(layout).port


def _write_private_text(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _cluster_id(path: Path) -> str:
    """The stack's Kafka cluster id, made once and kept beside the log
    directory, so a storage format after a half-finished first start gives
    the same cluster as before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path.read_text().strip()
    cluster_id = "-"
    # An id starting with "-" would be read as an option by the storage tool
    # (Kafka's own generator avoids them the same way).
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    path.write_text(cluster_id + "\n")
    return cluster_id


async def _kafka_has_broker(bootstrap: str, security: KafkaSecurity | None = None) -> bool:
    """A metadata request answered with at least one broker."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    login = {}
    if security is not None:
        login = {
            "security_protocol": "SASL_SSL",
            "ssl_context": ssl.create_default_context(cafile=str(security.ca_file)),
            "sasl_mechanism": security.mechanism,
            "sasl_plain_username": security.username,
            "sasl_plain_password": security.password(),
        }
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **login)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return bool(metadata.brokers())
    except (KafkaError, OSError):
        return False
    finally:
        await client.close()
