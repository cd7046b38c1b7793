"""The production topology loses nothing when any one node dies under load.

One private cluster profile (tests/cluster_fixtures.py: 3 Kafka nodes, 3
Cassandra nodes at RF 3, Redis with Sentinel, two processes of every
service) is shared by the module. Under a steady signing load of distinct
persons, retrying UNAVAILABLE with the same idempotency key
(tests/steady_load.py), each test kills one thing with SIGKILL and brings it
back, then checks that every ACCEPTED receipt is in Kafka and Cassandra,
that the live tally equals the distinct signatures per petition and per
territory, and that `petitions recount` finds no difference. Each prints the
time from the fault to the first ACCEPTED again and the calls refused
meanwhile (collected in test-artifacts/cluster-faults.txt).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from deploy.local.cluster import memory_report
from tests.cluster_fixtures import ClusterSystem, cluster_system
from tests.harness import REPO
from tests.steady_load import ACCEPTED, LoadReport, SteadyLoad, check_no_loss

__all__ = ["cluster_system"]

# The first test's time includes starting the cluster (minutes on 2 busy cores).
pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(1800)]

# Signatures started per second: steady, and small enough for 2 cores that
# also run three JVMs of each kind.
RATE = 8.0
WARM_UP = 20
AFTER = 20
RECOVERY_SECONDS = 120.0
REPORT = REPO / "test-artifacts" / "cluster-faults.txt"


@pytest.fixture(scope="module")
def report_lines(cluster_system: ClusterSystem) -> Iterator[list[str]]:
    """What the module measured: start-up timings, memory, every fault."""
    lines = [f"start-up: {step} {seconds:.1f} s" for step, seconds in cluster_system.timings.items()]
    memory_report(cluster_system.plan, lines.append)
    began = time.monotonic()
    yield lines
    lines.append(f"faults: {time.monotonic() - began:.1f} s")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def under_load(
    cluster: ClusterSystem,
    lines: list[str],
    title: str,
    fault: str,
    make: Callable[[SteadyLoad, str], Callable[[], None]],
) -> LoadReport:
    """Runs the load on two new petitions; `make(load, hot)` makes the fault and
    returns how to repair it; then waits for recovery, repairs, signs on,
    and checks that nothing was lost."""
    system = cluster.client
    hot = system.create_petition(f"{title}: the hot one")
    other = system.create_petition(f"{title}: another")
    with SteadyLoad(system, [hot.id, other.id], rate=RATE, give_up_after=RECOVERY_SECONDS) as load:
        load.wait_accepted(WARM_UP, timeout=120)
        load.mark_fault(fault)
        repair = make(load, hot.id)
        load.wait_recovered(fault, timeout=RECOVERY_SECONDS)
        repaired = time.monotonic()
        repair()
        lines.append(f"{fault}: repaired in {time.monotonic() - repaired:.1f} s")
        load.wait_accepted(load.accepted + AFTER, timeout=RECOVERY_SECONDS)
    report = load.report()
    # Printed before the check, so a failing check still says what the fault cost.
    lines.append(report.summary())
    print(report.summary())
    summary = check_no_loss(system, report.signatures, [hot.id, other.id], settle_timeout=120, env=cluster.env)
    lines.append(summary.line())
    print(summary.line())
    return report


def test_a_cassandra_node_killed_and_brought_back(cluster_system: ClusterSystem, report_lines: list[str]) -> None:
    # The last node: not the seed, which the others gossip through on start.
    node = cluster_system.plan.cassandra_names()[-1]

    def make(load: SteadyLoad, hot: str) -> Callable[[], None]:
        cluster_system.kill_server(node)
        return lambda: cluster_system.restart_server(node)

    under_load(cluster_system, report_lines, "A Cassandra node dies", f"kill -9 {node}", make)


def test_the_kafka_broker_leading_the_hot_partition_killed_and_brought_back(
    cluster_system: ClusterSystem, report_lines: list[str]
) -> None:
    def make(load: SteadyLoad, hot: str) -> Callable[[], None]:
        # The partition the hot petition's latest acknowledged signature went to.
        partition = next(
            s.partition for s in reversed(load.report().signatures) if s.outcome == ACCEPTED and s.petition_id == hot
        )
        broker = cluster_system.kafka_leader(partition)
        report_lines.append(f"the hot partition {partition} is led by {broker}")
        cluster_system.kill_server(broker)
        return lambda: cluster_system.restart_server(broker)

    under_load(cluster_system, report_lines, "A Kafka broker dies", "kill -9 the hot partition's leader", make)


def test_the_redis_primary_killed(cluster_system: ClusterSystem, report_lines: list[str]) -> None:
    primary = cluster_system.plan.redis_names()[0]

    def make(load: SteadyLoad, hot: str) -> Callable[[], None]:
        cluster_system.kill_server(primary)
        # With Sentinel the replica is promoted and the services follow it
        # without a restart; the old primary comes back as a replica.
        return lambda: cluster_system.restart_server(primary)

    under_load(cluster_system, report_lines, "The Redis primary dies", f"kill -9 {primary}", make)


def test_one_process_of_each_service_killed_and_restarted(
    cluster_system: ClusterSystem, report_lines: list[str]
) -> None:
    victims = [name for name in cluster_system.services if name.endswith("-1")]

    def make(load: SteadyLoad, hot: str) -> Callable[[], None]:
        for name in victims:
            cluster_system.kill_service(name)

        def repair() -> None:
            for name in victims:
                cluster_system.start_service(name)
            for name in victims:
                cluster_system.wait_service(name)

        return repair

    under_load(cluster_system, report_lines, "A process of each service dies", "kill -9 one of each service", make)
