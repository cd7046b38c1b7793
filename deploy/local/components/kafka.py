"""Kafka (KRaft): combined broker and controller nodes from the Maven jars."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploy.local.components.base import java, java_server_directories, port_open
from deploy.local.fetch import fetch_jars
from deploy.local.layout import Layout
from deploy.local.processes import StartFailed

KAFKA_PROPERTIES = """\
# Written by deploy/local/components/kafka.py: one combined broker and controller (KRaft).
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
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
"""

KAFKA_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=WARN
"""


@dataclass(frozen=True)
class KafkaNode:
    """One node of a multi-broker cluster (the no-loss tests run three)."""

    node_id: int
    port: int
    controller_port: int


@dataclass(frozen=True)
class Kafka:
    """A combined broker and controller. Alone by default (the local stack);
    with `cluster`, one of several nodes sharing a controller quorum."""

    name: str = "kafka"
    start_timeout: float = 90.0
    stop_timeout: float = 30.0
    # A small broker for a 2-core laptop or CI machine.
    heap: str = "512m"
    node: KafkaNode | None = None
    cluster: tuple[KafkaNode, ...] = ()
    cluster_name: str = "kafka"

    def fetch(self, layout: Layout) -> None:
        fetch_jars(layout, "kafka")

    def _node(self, layout: Layout) -> KafkaNode:
        return self.node or KafkaNode(1, layout.ports.kafka, layout.ports.kafka_controller)

    def prepare(self, layout: Layout) -> list[str]:
        jars, conf, data = java_server_directories(layout, self.name, software="kafka")
        node = self._node(layout)
        nodes = self.cluster or (node,)
        properties = conf / "server.properties"
        properties.write_text(
            KAFKA_PROPERTIES.format(
                node_id=node.node_id,
                voters=",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes),
                port=node.port,
                controller_port=node.controller_port,
                log_dir=data / "log",
                replication=min(3, len(nodes)),
                # With three replicas, an acknowledged write is on two of them.
                min_isr=2 if len(nodes) >= 3 else 1,
            )
        )
        (conf / "log4j.properties").write_text(KAFKA_LOG4J)
        jvm = [
            java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
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
        result = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StartFailed(f"kafka: formatting its storage failed:\n{result.stdout}{result.stderr}")

    def ready(self, layout: Layout) -> bool:
        port = self._node(layout).port
        if not port_open(port):
            return False
        return asyncio.run(_kafka_has_broker(f"127.0.0.1:{port}"))

    def port(self, layout: Layout) -> int:
        return self._node(layout).port


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


async def _kafka_has_broker(bootstrap: str) -> bool:
    """A metadata request answered with at least one broker."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return bool(metadata.brokers())
    except (KafkaError, OSError):
        return False
    finally:
        await client.close()
