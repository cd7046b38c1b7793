"""The stack's servers: how each is configured, started and found ready.

Each component writes its own configuration under the run directory (never
into the jar cache), so a second stack with another run directory and other
ports is fully isolated from the first.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from deploy.local.fetch import ensure_redis_server, fetch_jars
from deploy.local.layout import Layout
from deploy.local.processes import StartFailed


class Component(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def start_timeout(self) -> float: ...

    @property
    def stop_timeout(self) -> float: ...

    def fetch(self, layout: Layout) -> None: ...

    def prepare(self, layout: Layout) -> list[str]:
        """Writes configuration, initialises storage; returns the argv."""
        ...

    def ready(self, layout: Layout) -> bool: ...

    def port(self, layout: Layout) -> int: ...


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise SystemExit("java is not on PATH and JAVA_HOME is not set; install a JDK 17")
    return found


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Redis:
    name: str = "redis"
    start_timeout: float = 20.0
    stop_timeout: float = 20.0

    def fetch(self, layout: Layout) -> None:
        ensure_redis_server()

    def prepare(self, layout: Layout) -> list[str]:
        data = layout.data(self.name)
        data.mkdir(parents=True, exist_ok=True)
        return [
            ensure_redis_server(),
            "--port", str(layout.ports.redis),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            # Locally every write is appended and fsynced each second, so a
            # restart (or a crash) keeps the counters.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def ready(self, layout: Layout) -> bool:
        import redis

        client = redis.Redis(port=layout.ports.redis, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def port(self, layout: Layout) -> int:
        return layout.ports.redis


KAFKA_PROPERTIES = """\
# Written by deploy/local/components.py: one combined broker and controller (KRaft).
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


def _java_server_directories(layout: Layout, name: str, software: str = "") -> tuple[Path, Path, Path]:
    """The server's jars (fetched if needed), and its config and data
    directories (created if needed)."""
    jars = fetch_jars(layout, software or name)
    conf, data = layout.conf(name), layout.data(name)
    conf.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    return jars, conf, data


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
        jars, conf, data = _java_server_directories(layout, self.name, software="kafka")
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


CASSANDRA_YAML = """\
# Written by deploy/local/components.py: one small local node.
cluster_name: petitions-local
num_tokens: 16
allocate_tokens_for_local_replication_factor: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage_port}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
native_transport_port: {native_port}
start_native_transport: true
data_file_directories:
  - {data}/data
commitlog_directory: {data}/commitlog
saved_caches_directory: {data}/saved_caches
hints_directory: {data}/hints
cdc_raw_directory: {data}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
disk_failure_policy: stop
commit_failure_policy: stop
# Test sessions drop their keyspaces; snapshots of them would only fill the disk.
auto_snapshot: false
# Sized for a 1 GiB heap on a 2-core machine.
concurrent_reads: 8
concurrent_writes: 16
concurrent_counter_writes: 8
concurrent_compactors: 1
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
counter_cache_size: 0MiB
"""

CASSANDRA_LOGBACK = """\
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""

# The module exports and opens the server needs on JDK 17 (as in Cassandra's
# conf/jvm17-server.options); without them it dies at start-up.
JDK17_MODULE_FLAGS = [
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
]  # fmt: skip


@dataclass(frozen=True)
class Cassandra:
    name: str = "cassandra"
    start_timeout: float = 180.0
    # A clean stop flushes memtables; on 2 cores that can take a while.
    stop_timeout: float = 60.0
    # Explicit, or the JVM takes a quarter of the machine's memory.
    heap: str = "1G"
    direct_memory: str = "512M"

    def fetch(self, layout: Layout) -> None:
        fetch_jars(layout, self.name)

    def prepare(self, layout: Layout) -> list[str]:
        jars, conf, data = _java_server_directories(layout, self.name)
        ports = layout.ports
        (conf / "cassandra.yaml").write_text(
            CASSANDRA_YAML.format(storage_port=ports.cassandra_storage, native_port=ports.cassandra, data=data)
        )
        (conf / "logback.xml").write_text(CASSANDRA_LOGBACK)
        (conf / "triggers").mkdir(exist_ok=True)
        jamm = next(jars.glob("jamm-*.jar"), None)
        if jamm is None:
            raise StartFailed(f"cassandra: no jamm jar in {jars}; delete that directory and run again")
        return [
            java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            f"-XX:MaxDirectMemorySize={self.direct_memory}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=300",
            "-Xss512k",
            # A JVM that ran out of memory may be half-way through a write: stop it.
            "-XX:+ExitOnOutOfMemoryError",
            f"-javaagent:{jamm}",
            "-Djdk.attach.allowAttachSelf=true",
            *JDK17_MODULE_FLAGS,
            "-Djava.net.preferIPv4Stack=true",
            "-Dio.netty.tryReflectionSetAccessible=true",
            f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile={conf / 'logback.xml'}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.storagedir={data}",
            f"-Dcassandra.logdir={layout.logs()}",
            f"-Dcassandra.jmx.local.port={ports.cassandra_jmx}",
            # An empty directory of our own: without one the daemon warns at every start.
            f"-Dcassandra.triggers_dir={conf / 'triggers'}",
            # A single node has no gossip to wait for.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp",
            f"{conf}:{jars}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def ready(self, layout: Layout) -> bool:
        if not port_open(layout.ports.cassandra):
            return False
        from cassandra import DriverException
        from cassandra.cluster import NoHostAvailable
        from cassandra.protocol import ErrorMessage

        from servicekit.stores import cassandra_cluster

        cluster = cassandra_cluster(["127.0.0.1"], layout.ports.cassandra, connect_timeout=3)
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local", timeout=5).one()
            return row is not None
        # A node half-way through start-up refuses, times out or answers
        # with a server error: all mean "not yet".
        except (NoHostAvailable, DriverException, ErrorMessage, OSError):
            return False
        finally:
            cluster.shutdown()

    def port(self, layout: Layout) -> int:
        return layout.ports.cassandra


COMPONENTS: dict[str, Component] = {c.name: c for c in (Redis(), Kafka(), Cassandra())}
