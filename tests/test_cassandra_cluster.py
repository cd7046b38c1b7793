"""Cassandra as production runs it: the keyspace replicated by
NetworkTopologyStrategy in the settings' data centre, and a three-node ring
on 127.0.0.2-4 (replication factor 3) where LOCAL_QUORUM reads and writes,
and conditional writes, go on through kill -9 of a node, which then rejoins.

The migration tests use the session's single node (SimpleSnitch, data centre
"datacenter1"); the ring tests start three nodes of their own in a temporary
run directory on free ports, once for the module (three JVMs are expensive).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cassandra import ConsistencyLevel, DriverException, ReadTimeout, WriteTimeout
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.protocol import ErrorMessage
from cassandra.query import SimpleStatement

from deploy.local.components import Cassandra
from deploy.local.components.cassandra import gossip_view, node_cluster
from deploy.local.layout import Layout
from deploy.local.stack import Stack
from servicekit.settings import CommonSettings
from servicekit.stores import cassandra_cluster
from tests.harness import Namespace, free_port, run_cli

pytestmark = [pytest.mark.stack]

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DATACENTER = "dc1"
NTS = "org.apache.cassandra.locator.NetworkTopologyStrategy"
SIMPLE = "org.apache.cassandra.locator.SimpleStrategy"
# Three JVMs starting together on 2 cores shared with other work: minutes.
NODE_START_SECONDS = 600.0
MIGRATE_SECONDS = 480.0
# A write in flight on the killed node's connection may fail; the driver has
# marked the node down well before this many more writes are acknowledged.
WRITES_AFTER_KILL = 300


def replication(session: Session, keyspace: str) -> dict[str, str]:
    row = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", [keyspace], timeout=30
    ).one()
    assert row is not None, f"keyspace {keyspace} does not exist"
    return dict(row.replication)


def tables(session: Session, keyspace: str) -> set[str]:
    rows = session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", [keyspace], timeout=30
    )
    return {row.table_name for row in rows}


# The keyspace statement of `petitions migrate`, on the session's single node.


@pytest.fixture
def single_node(stack: CommonSettings) -> Iterator[Session]:
    cluster = cassandra_cluster(stack.cassandra_hosts, stack.cassandra_port, connect_timeout=30)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


@pytest.fixture
def own_keyspace(single_node: Session) -> Iterator[str]:
    keyspace = f"petitions_nts_{uuid.uuid4().hex[:8]}"
    yield keyspace
    single_node.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


def migrate(env: dict[str, str], keyspace: str, **settings: str) -> Any:
    return run_cli(
        {**env, "PETITIONS_KEYSPACE": keyspace, **{f"PETITIONS_{k.upper()}": v for k, v in settings.items()}},
        "migrate",
        timeout=300,
    )


def test_migrate_creates_the_keyspace_with_network_topology_strategy(
    stack: CommonSettings, namespace: Namespace, single_node: Session, own_keyspace: str
) -> None:
    result = migrate(namespace.env(stack), own_keyspace)
    assert result.returncode == 0, result.stderr
    # SimpleSnitch, the single node's, reports "datacenter1", the default.
    assert replication(single_node, own_keyspace) == {"class": NTS, "datacenter1": "1"}


def test_migrate_moves_a_simple_strategy_keyspace_to_network_topology_keeping_its_rows(
    stack: CommonSettings, namespace: Namespace, single_node: Session, own_keyspace: str
) -> None:
    single_node.execute(
        f"CREATE KEYSPACE {own_keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
        timeout=60,
    )
    single_node.execute(f"CREATE TABLE {own_keyspace}.legislatures (name text PRIMARY KEY, current text)", timeout=60)
    single_node.execute(f"INSERT INTO {own_keyspace}.legislatures (name, current) VALUES ('current', 'xvii')")

    first = migrate(namespace.env(stack), own_keyspace)
    assert first.returncode == 0, first.stderr
    assert replication(single_node, own_keyspace) == {"class": NTS, "datacenter1": "1"}
    # Idempotent: a second migrate finds it done and changes nothing.
    second = migrate(namespace.env(stack), own_keyspace)
    assert second.returncode == 0, second.stderr
    assert replication(single_node, own_keyspace) == {"class": NTS, "datacenter1": "1"}
    row = single_node.execute(f"SELECT current FROM {own_keyspace}.legislatures WHERE name = 'current'").one()
    assert row is not None
    assert row.current == "xvii"
    assert "petition_records" in tables(single_node, own_keyspace)


def test_migrate_refuses_to_change_the_replication_factor_while_moving_to_network_topology(
    stack: CommonSettings, namespace: Namespace, single_node: Session, own_keyspace: str
) -> None:
    # Replicas that do not hold the rows yet would answer a quorum read
    # without them: a change of replication factor needs a repair, by hand.
    single_node.execute(
        f"CREATE KEYSPACE {own_keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 2}}",
        timeout=60,
    )
    result = migrate(namespace.env(stack), own_keyspace, cassandra_replication="1")
    assert result.returncode != 0
    assert f"keyspace {own_keyspace}" in result.stderr
    assert "replication_factor 2" in result.stderr
    assert "PETITIONS_CASSANDRA_REPLICATION=1" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # Nothing changed: neither the replication nor any table.
    assert replication(single_node, own_keyspace) == {"class": SIMPLE, "replication_factor": "2"}
    assert tables(single_node, own_keyspace) == set()


# Three nodes on 127.0.0.2-4.


def ports_free_on_every_address(count: int) -> list[int]:
    """Ports nothing listens on at any of the ring's addresses (nor on
    127.0.0.1, which the stack checks before it starts a node): every node
    uses the same native and storage ports, as on separate machines."""
    found: list[int] = []
    while len(found) < count:
        port = free_port()
        probes: list[socket.socket] = []
        try:
            for address in ADDRESSES:
                probe = socket.socket()
                probes.append(probe)
                probe.bind((address, port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        if port not in found:
            found.append(port)
    return found


@dataclass
class Ring:
    stack: Stack
    layout: Layout
    nodes: dict[str, Cassandra]
    native_port: int
    keyspace: str
    timings: dict[str, float] = field(default_factory=dict)

    def node(self, address: str) -> Cassandra:
        return next(n for n in self.nodes.values() if n.address == address)

    def name(self, address: str) -> str:
        return self.node(address).name

    def client(self) -> Cluster:
        """What the services use: token-aware in dc1, LOCAL_QUORUM, LWT at LOCAL_SERIAL."""
        return cassandra_cluster(
            ADDRESSES, self.native_port, connect_timeout=30, datacenter=DATACENTER, consistency="LOCAL_QUORUM"
        )


@pytest.fixture(scope="module")
def ring(stack: CommonSettings, namespace: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    default = Layout.from_environment()
    layout = Layout(tmp_path_factory.mktemp("cassandra-ring"), default.jar_cache, default.ports)
    native, storage = ports_free_on_every_address(2)
    nodes = {
        f"cassandra-{index}": Cassandra(
            name=f"cassandra-{index}",
            address=address,
            native_port=native,
            storage_port=storage,
            jmx_port=free_port(),
            # Two seeds, as recommended: the third node joins through them.
            seeds=ADDRESSES[:2],
            datacenter=DATACENTER,
            heap="512M",
            direct_memory="256M",
            memtable_space="64MiB",
            cluster_name=f"ring-{namespace.suffix}",
            start_timeout=NODE_START_SECONDS,
        )
        for index, address in enumerate(ADDRESSES, start=1)
    }
    stack_of_ring = Stack(layout, dict(nodes))
    keyspace = f"{namespace.keyspace}_ring"
    ring = Ring(stack_of_ring, layout, nodes, native, keyspace)
    try:
        began = time.monotonic()
        # All three at once: a new cluster's nodes do not bootstrap (see
        # Cassandra._bootstrap_line), so none waits for another.
        report = stack_of_ring.up(list(nodes))
        ring.timings["start, all three"] = time.monotonic() - began
        for name, line in report.items():
            print(f"{name} ({nodes[name].address}): {line}")
        wait_until(
            lambda: all(n.sees_peers(layout, set(ADDRESSES) - {n.address}) for n in nodes.values()),
            NODE_START_SECONDS,
            "every node sees the two others in its gossip",
        )
        ring.timings["start until every node sees the others"] = time.monotonic() - began
        env = {
            **namespace.env(stack),
            "PETITIONS_KEYSPACE": keyspace,
            "PETITIONS_CASSANDRA_HOSTS": '["' + '", "'.join(ADDRESSES) + '"]',
            "PETITIONS_CASSANDRA_PORT": str(native),
            "PETITIONS_CASSANDRA_DATACENTER": DATACENTER,
            "PETITIONS_CASSANDRA_REPLICATION": "3",
        }
        # On a 2-core machine busy with other JVMs, the driver's first
        # connection can time out at every node (its control connection
        # waits 2 s for each schema query): migrate is idempotent and is run
        # again then, as a deploy would.
        deadline = time.monotonic() + MIGRATE_SECONDS
        while True:
            result = run_cli(env, "migrate", timeout=300)
            if result.returncode == 0 or "NoHostAvailable" not in result.stderr or time.monotonic() > deadline:
                break
            print(f"migrate could not connect yet: {result.stderr.strip().splitlines()[-1][:300]}")
        ring.timings["start until migrated"] = time.monotonic() - began
        assert result.returncode == 0, f"migrate failed:\n{result.stdout}\n{result.stderr}"
        yield ring
    finally:
        for phase, seconds in ring.timings.items():
            print(f"ring timing: {phase}: {seconds:.1f} s")
        stack_of_ring.down(list(nodes))


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:g} s: {what}")
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_migrate_replicates_the_keyspace_three_times_in_the_data_centre(ring: Ring) -> None:
    cluster = ring.client()
    try:
        assert replication(cluster.connect(), ring.keyspace) == {"class": NTS, DATACENTER: "3"}
        # Each node places the replicas by the same rule: every node holds
        # every row (the driver's token map says which nodes replicate what).
        token_map = cluster.metadata.token_map
        assert token_map is not None
        replicas = token_map.get_replicas(ring.keyspace, token_map.token_class.from_key(b"any petition"))
        assert sorted(host.address for host in replicas) == list(ADDRESSES)
    finally:
        cluster.shutdown()


@dataclass
class Writer:
    """Writes rows 0, 1, 2, ... at LOCAL_QUORUM from a thread, as a service
    would under load, and keeps which were acknowledged and which failed."""

    session: Session
    table: str
    acknowledged: dict[int, str] = field(default_factory=dict)
    acknowledged_at: list[float] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, start: int, count: int | None = None) -> int:
        insert = self.session.prepare(f"INSERT INTO {self.table} (id, value) VALUES (?, ?)")
        # An upsert of the same value: the driver may send it again to
        # another node when the first one's connection drops.
        insert.is_idempotent = True
        key = start
        while not self.stop.is_set() and (count is None or key < start + count):
            value = uuid.uuid4().hex
            try:
                # A write that timed out is sent again, as a service's
                # client does (the same upsert): only a refusal is a failure.
                answer(partial(self.session.execute, insert, [key, value], timeout=30))
                with self.lock:
                    self.acknowledged[key] = value
                    self.acknowledged_at.append(time.monotonic())
            except (NoHostAvailable, DriverException, ErrorMessage) as error:
                with self.lock:
                    self.failed[key] = f"{type(error).__name__}: {error}"
            key += 1
        return key

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


def read_back(session: Session, table: str, expected: dict[int, str], consistency: int) -> dict[int, str | None]:
    """The rows whose stored value is not the acknowledged one. A read that
    times out (the replicas too slow on a busy machine) answered nothing,
    wrong or right: it is asked again."""
    select = session.prepare(f"SELECT value FROM {table} WHERE id = ?")
    select.consistency_level = consistency
    wrong: dict[int, str | None] = {}
    for key, value in expected.items():
        row = answer(partial(session.execute, select, [key], timeout=30)).one()
        if row is None or row.value != value:
            wrong[key] = None if row is None else row.value
    return wrong


def answer(query: Callable[[], Any], attempts: int = 10) -> Any:
    """The query's result, asking again after a server-side timeout: a
    timed-out read returned nothing, and a timed-out conditional write
    (write_type CAS) may or may not have been applied, which only asking
    again tells, as every client of an LWT must."""
    for attempt in range(1, attempts + 1):
        try:
            return query()
        except (ReadTimeout, WriteTimeout) as error:
            TIMEOUTS_RETRIED.append(f"{type(error).__name__}: {error}")
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


# Server-side timeouts asked again, for the report.
TIMEOUTS_RETRIED: list[str] = []


def write_all_through(ring: Ring, coordinator: str, table: str, key: int) -> bool:
    """A write at consistency ALL coordinated by `coordinator`: it succeeds
    only if that node holds all three replicas alive and each acknowledges."""
    cluster = node_cluster(coordinator, ring.native_port, connect_timeout=30)
    try:
        session = cluster.connect()
        statement = SimpleStatement(
            f"INSERT INTO {table} (id, value) VALUES (%s, %s)", consistency_level=ConsistencyLevel.ALL
        )
        session.execute(statement, [key, f"all-through-{coordinator}"], timeout=30)
        return True
    except (NoHostAvailable, DriverException, ErrorMessage):
        return False
    finally:
        cluster.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_node_killed_loses_no_acknowledged_write_and_rejoins(ring: Ring, tmp_path: Path) -> None:
    victim = ADDRESSES[0]  # a seed, and the client's first contact point
    others = [a for a in ADDRESSES if a != victim]
    table = f"{ring.keyspace}.ring_probe"
    cluster = ring.client()
    try:
        session = cluster.connect()
        session.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, value text)", timeout=60)
        writer = Writer(session, table)
        before = writer.run(0, 200)
        assert writer.failed == {}, writer.failed
        generation = gossip_view(others[0], ring.native_port)[victim].generation

        # kill -9 in the middle of a stream of writes.
        thread_end: list[int] = []
        thread = threading.Thread(target=lambda: thread_end.append(writer.run(before)))
        thread.start()
        wait_until(lambda: writer.count() >= 300, 300, "100 writes acknowledged while all three nodes are up")
        killed_at = time.monotonic()
        assert ring.stack.kill(ring.name(victim)), "the node was not running"
        acknowledged_at_kill = writer.count()
        wait_until(
            lambda: writer.count() >= acknowledged_at_kill + WRITES_AFTER_KILL,
            300,
            f"{WRITES_AFTER_KILL} writes acknowledged after the kill",
        )
        writer.stop.set()
        thread.join(60)
        first_after_kill = min(t for t in writer.acknowledged_at if t > killed_at) - killed_at
        ring.timings["kill until the next acknowledged write"] = first_after_kill
        refused = sorted(set(writer.failed.values()))[:3]
        after_kill = writer.count() - acknowledged_at_kill
        print(
            f"killed {victim}: {len(writer.failed)} writes refused meanwhile {refused}; "
            f"{after_kill} acknowledged after the kill in {time.monotonic() - killed_at:.1f} s"
        )
        # The writes refused are only those in flight on the dead node's
        # connection at the moment of the kill: a handful, not a stream.
        assert len(writer.failed) <= 16, writer.failed

        # With one node down, every acknowledged write is read back at
        # LOCAL_QUORUM (two of the three replicas: at least one of them
        # acknowledged it).
        assert read_back(session, table, writer.acknowledged, ConsistencyLevel.LOCAL_QUORUM) == {}
        # New writes with the node down: every one acknowledged.
        after = Writer(session, table)
        after.run(thread_end[0] + 1000, 100)
        assert after.failed == {}, after.failed
        assert read_back(session, table, after.acknowledged, ConsistencyLevel.LOCAL_QUORUM) == {}

        # A conditional write still decides (Paxos at LOCAL_SERIAL: two of three).
        claim = session.prepare(f"INSERT INTO {table} (id, value) VALUES (?, ?) IF NOT EXISTS")
        won = answer(lambda: session.execute(claim, [-1, "first"], timeout=30).one())
        lost = answer(lambda: session.execute(claim, [-1, "second"], timeout=30).one())
        assert won is not None
        # Applied, or applied by an attempt that timed out before this one.
        assert won.applied or won.value == "first"
        assert lost is not None
        assert not lost.applied
        assert lost.value == "first"

        # Back: it rejoins, and both peers see its new incarnation up.
        restarted_at = time.monotonic()
        print(ring.stack.up([ring.name(victim)]))
        ring.timings["restart of the killed node until it answers"] = time.monotonic() - restarted_at

        def peers_see_it_back() -> bool:
            for other in others:
                try:
                    state = gossip_view(other, ring.native_port).get(victim)
                except OSError:
                    return False
                if state is None or state.generation <= generation or state.status != "NORMAL" or not state.rpc_ready:
                    return False
            return True

        wait_until(peers_see_it_back, 300, f"{others} see {victim} back (a new generation, NORMAL, CQL up)")
        ring.timings["restart until both peers see it back in gossip"] = time.monotonic() - restarted_at
        # Each peer, as coordinator, now needs the restarted node's
        # acknowledgement for a write at ALL: it sees it UP, and it serves.
        wait_until(
            lambda: all(write_all_through(ring, other, table, -2) for other in [*others, victim]),
            300,
            "a write at ALL coordinated by each node succeeds",
        )
        ring.timings["restart until writes at ALL succeed through every node"] = time.monotonic() - restarted_at
        # Everything acknowledged, read at ALL: the restarted node's answers
        # (hints, read repair) agree with the others'.
        everything = {**writer.acknowledged, **after.acknowledged, -1: "first"}
        assert read_back(session, table, everything, ConsistencyLevel.ALL) == {}
    finally:
        cluster.shutdown()
        print(f"server-side timeouts asked again: {len(TIMEOUTS_RETRIED)} {TIMEOUTS_RETRIED[:3]}")
        for phase, seconds in ring.timings.items():
            print(f"ring timing: {phase}: {seconds:.1f} s")
