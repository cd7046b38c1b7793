"""Cassandra as production runs it: the keyspace replicated by
NetworkTopologyStrategy in the settings' data centre, on the session's single
node (SimpleSnitch, data centre "datacenter1").

The three-node ring (127.0.0.2-4, RF 3, LOCAL_QUORUM through kill -9 of a
node) is proven under a signing load by tests/test_cluster_faults.py, on the
cluster profile the suite starts once: a second ring of its own here would
cost the suite minutes of three more JVMs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cassandra.cluster import Session

from servicekit.settings import CommonSettings
from servicekit.stores import cassandra_cluster
from tests.harness import Namespace, run_cli

pytestmark = [pytest.mark.stack]

NTS = "org.apache.cassandra.locator.NetworkTopologyStrategy"
SIMPLE = "org.apache.cassandra.locator.SimpleStrategy"


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
