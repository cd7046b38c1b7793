"""Cassandra from the Maven jars: one small node on a loopback address, or
one node of a local cluster (each node on its own loopback alias, 127.0.0.2,
.3, .4: Linux routes all of 127/8 to lo, so every node can use the same
ports, as on separate machines)."""

from __future__ import annotations

import socket
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.local.components.base import java, java_server_directories
from deploy.local.fetch import fetch_jars
from deploy.local.layout import Layout
from deploy.local.processes import StartFailed

if TYPE_CHECKING:
    from cassandra.cluster import Cluster

CASSANDRA_YAML = """\
# Written by deploy/local/components/cassandra.py: {what}.
cluster_name: {cluster_name}
num_tokens: 16
allocate_tokens_for_local_replication_factor: {allocation_rf}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: {snitch}
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seeds}"
listen_address: {address}
rpc_address: {address}
{bootstrap}storage_port: {storage_port}
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
memtable_heap_space: {memtable}
memtable_offheap_space: {memtable}
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


RACKDC_PROPERTIES = """\
# Written by deploy/local/components/cassandra.py: what GossipingPropertyFileSnitch
# tells the other nodes (and the drivers) about where this node is.
dc={datacenter}
rack={rack}
"""

DEFAULT_DATACENTER = "datacenter1"
DEFAULT_RACK = "rack1"


@dataclass(frozen=True)
class Cassandra:
    """A Cassandra node. By default the local stack's lone node, exactly as
    it always was (127.0.0.1, SimpleSnitch, the layout's ports). Given
    `seeds`, a `datacenter` or a `rack`, one node of a cluster: its own
    address, GossipingPropertyFileSnitch with that data centre and rack."""

    name: str = "cassandra"
    address: str = "127.0.0.1"
    # None: the layout's (PETITIONS_CASSANDRA*_PORT), as the lone node always had.
    native_port: int | None = None
    storage_port: int | None = None
    # JMX listens on 127.0.0.1 whatever the node's address: distinct per node.
    jmx_port: int | None = None
    # The addresses a starting node gossips with first; empty: a lone node.
    seeds: tuple[str, ...] = ()
    datacenter: str = DEFAULT_DATACENTER
    rack: str = DEFAULT_RACK
    cluster_name: str = "petitions-local"
    start_timeout: float = 180.0
    # A clean stop flushes memtables; on 2 cores that can take a while.
    stop_timeout: float = 60.0
    # Explicit, or the JVM takes a quarter of the machine's memory.
    heap: str = "1G"
    direct_memory: str = "512M"
    # Memtables on and off heap, each; a quarter of the heap or less.
    memtable_space: str = "128MiB"

    @property
    def clustered(self) -> bool:
        return bool(self.seeds) or (self.datacenter, self.rack) != (DEFAULT_DATACENTER, DEFAULT_RACK)

    def _native_port(self, layout: Layout) -> int:
        return self.native_port or layout.ports.cassandra

    def _storage_port(self, layout: Layout) -> int:
        return self.storage_port or layout.ports.cassandra_storage

    def _jmx_port(self, layout: Layout) -> int:
        return self.jmx_port or layout.ports.cassandra_jmx

    def _formed_marker(self, layout: Layout) -> Path:
        """Written when a node of the cluster first answers: from then on the
        ring exists, and a node starting with no data joins it by
        bootstrapping (streaming its share) rather than as a founder."""
        return layout.data(self.cluster_name) / "cluster.formed"

    def fetch(self, layout: Layout) -> None:
        fetch_jars(layout, "cassandra")

    def prepare(self, layout: Layout) -> list[str]:
        jars, conf, data = java_server_directories(layout, self.name, software="cassandra")
        storage_port = self._storage_port(layout)
        what = f"node {self.address} of cluster {self.cluster_name}" if self.clustered else "one small local node"
        (conf / "cassandra.yaml").write_text(
            CASSANDRA_YAML.format(
                what=what,
                cluster_name=self.cluster_name,
                # With three replicas per data centre, vnode tokens are
                # allocated for an even share of three replicas.
                allocation_rf=3 if self.clustered else 1,
                snitch="GossipingPropertyFileSnitch" if self.clustered else "SimpleSnitch",
                seeds=",".join(f"{seed}:{storage_port}" for seed in (self.seeds or (self.address,))),
                address=self.address,
                bootstrap=self._bootstrap_line(layout),
                storage_port=storage_port,
                native_port=self._native_port(layout),
                data=data,
                memtable=self.memtable_space,
            )
        )
        if self.clustered:
            (conf / "cassandra-rackdc.properties").write_text(
                RACKDC_PROPERTIES.format(datacenter=self.datacenter, rack=self.rack)
            )
        (conf / "logback.xml").write_text(CASSANDRA_LOGBACK)
        (conf / "triggers").mkdir(exist_ok=True)
        jamm = next(jars.glob("jamm-*.jar"), None)
        if jamm is None:
            raise StartFailed(f"{self.name}: no jamm jar in {jars}; delete that directory and run again")
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
            f"-Dcassandra.jmx.local.port={self._jmx_port(layout)}",
            # An empty directory of our own: without one the daemon warns at every start.
            f"-Dcassandra.triggers_dir={conf / 'triggers'}",
            *self._gossip_flags(),
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp",
            f"{conf}:{jars}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def _bootstrap_line(self, layout: Layout) -> str:
        """auto_bootstrap false while the cluster is being created (no node
        has answered a client yet, so no node holds data to stream, and the
        nodes can start at once, where bootstrapping ones would have to
        start one after another, each waiting 30 s of ring delay). Once the
        ring exists, a node starting with no data bootstraps, as it must; a
        node restarted after a crash has its tokens on disk and never
        bootstraps either way."""
        if self.clustered and not self._formed_marker(layout).exists():
            return "auto_bootstrap: false\n"
        return ""

    def _gossip_flags(self) -> list[str]:
        if not self.clustered:
            # A single node has no gossip to wait for.
            return ["-Dcassandra.skip_wait_for_gossip_to_settle=0"]
        # In a cluster the node waits for gossip to settle before it takes
        # clients, so it coordinates no request before it knows which of its
        # peers are alive (else LOCAL_QUORUM would be refused as unavailable).
        return []

    def ready(self, layout: Layout) -> bool:
        """THIS node answers a query: the driver talks to its address only,
        never to a peer it discovers. Whether it sees its peers is
        sees_peers(): a node of a cluster started one after another is
        ready before the next one exists."""
        if not _port_open(self.address, self._native_port(layout)):
            return False
        from cassandra import DriverException
        from cassandra.cluster import NoHostAvailable
        from cassandra.protocol import ErrorMessage

        cluster = node_cluster(self.address, self._native_port(layout))
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local", timeout=5).one()
        # A node half-way through start-up refuses, times out or answers
        # with a server error: all mean "not yet".
        except (NoHostAvailable, DriverException, ErrorMessage, OSError):
            return False
        finally:
            cluster.shutdown()
        if row is not None and self.clustered:
            # The ring now exists: a node that starts later with no data
            # must bootstrap (see _bootstrap_line).
            marker = self._formed_marker(layout)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        return row is not None

    def sees_peers(self, layout: Layout, peers: Collection[str]) -> bool:
        """This node's gossip holds every one of `peers` as a normal member
        of the ring whose native transport is up. Gossip state is not a
        failure detector: a peer killed a moment ago keeps its last state,
        and a restarted one shows a higher generation (see gossip_view)."""
        try:
            view = gossip_view(self.address, self._native_port(layout))
        except OSError:
            return False
        return all(p in view and view[p].status == "NORMAL" and view[p].rpc_ready for p in peers)

    def port(self, layout: Layout) -> int:
        return self._native_port(layout)


@dataclass(frozen=True)
class GossipState:
    """What one node's gossip says of a member of the ring."""

    address: str
    # The member's start time (seconds): it changes at every restart.
    generation: int
    # NORMAL, BOOT, LEAVING, ... (the first field of its STATUS).
    status: str
    rpc_ready: bool


def gossip_view(address: str, port: int) -> dict[str, GossipState]:
    """The ring as the node at `address` knows it from gossip
    (system_views.gossip_info), itself included. Raises OSError when the node
    does not answer."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable
    from cassandra.protocol import ErrorMessage

    cluster = node_cluster(address, port)
    try:
        rows = cluster.connect().execute(
            "SELECT address, generation, status_with_port, rpc_ready FROM system_views.gossip_info", timeout=5
        )
        return {
            row.address: GossipState(
                row.address,
                row.generation or 0,
                (row.status_with_port or "").split(",", 1)[0],
                row.rpc_ready == "true",
            )
            for row in rows
        }
    except (NoHostAvailable, DriverException, ErrorMessage) as error:
        raise OSError(f"cassandra at {address}:{port} did not answer: {error}") from error
    finally:
        cluster.shutdown()


def node_cluster(address: str, port: int, connect_timeout: float = 5) -> Cluster:
    """A driver Cluster that sends every query to the one node at `address`,
    never to the peers it discovers (what a per-node check needs), and
    skips the schema and token metadata a check does not use (on a busy
    2-core machine, fetching them took longer than the check)."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]), request_timeout=10)
    return Cluster(
        [address],
        port=port,
        protocol_version=5,
        connect_timeout=connect_timeout,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False
