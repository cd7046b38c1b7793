"""Cassandra from the Maven jars: one small node on a loopback address."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.local.components.base import java, java_server_directories, port_open
from deploy.local.fetch import fetch_jars
from deploy.local.layout import Layout
from deploy.local.processes import StartFailed

CASSANDRA_YAML = """\
# Written by deploy/local/components/cassandra.py: one small local node.
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
        jars, conf, data = java_server_directories(layout, self.name)
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
