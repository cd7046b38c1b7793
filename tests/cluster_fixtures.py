"""A private cluster-profile system for the fault tests: the servers of
deploy/local/cluster.py in a temporary run directory on free ports (never a
developer's .run/cluster), the schema, and two processes of every service,
started with a test namespace's environment (issuers, staff, petition types,
rate limits) pointing at the cluster."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from deploy.local import processes
from deploy.local.cluster import ClusterPlan, ClusterPorts
from deploy.local.components import port_open
from deploy.local.layout import REPO, Layout
from deploy.local.processes import ProcessFiles, StartFailed
from deploy.local.stack import Stack
from deploy.local.system import Service
from servicekit.settings import CommonSettings
from servicekit.stores import kafka_options, start_kafka_client
from tests.harness import (
    Namespace,
    ServiceProcess,
    free_port,
    gateway_env,
    run_cli,
    start_service,
    wait_http,
    write_petition_types,
)
from tests.system import SystemClient
from tests.waiting import eventually

SERVICE_START_SECONDS = 90.0
START_ATTEMPTS = 3


@dataclass
class ClusterSystem:
    """The running cluster, its services and a client of the whole."""

    plan: ClusterPlan
    stack: Stack
    settings: CommonSettings
    namespace: Namespace
    env: dict[str, str]
    services: dict[str, Service]
    client: SystemClient
    # Seconds each start-up step took, for the report.
    timings: dict[str, float] = field(default_factory=dict)

    def start_service(self, name: str) -> None:
        _start(self.plan, self.env, self.services[name])

    def wait_service(self, name: str, timeout: float = SERVICE_START_SECONDS) -> float:
        return _wait(self.plan, self.services[name], timeout)

    def restart_service(self, name: str) -> float:
        """Starts the process again; the seconds until it is ready."""
        self.start_service(name)
        return self.wait_service(name)

    def kill_service(self, name: str) -> None:
        """kill -9 of one process, as a crash would."""
        assert processes.kill(ProcessFiles.under(self.plan.run_dir, name)), f"{name} was not running"

    def kill_server(self, name: str) -> None:
        """kill -9; for a Kafka broker, then waits until its client port is
        closed: its JVM can take longer to go than processes.kill waits, and
        a restart then found the port still held ("in use by a process this
        stack did not start")."""
        component = self.stack.components[name]
        assert self.stack.kill(name), f"{name} was not running"
        if name in self.plan.kafka_names():
            port = component.port(self.plan.layout)
            eventually(lambda: not port_open(port), 60, interval=0.1, message=f"{name} still listens on {port}")

    def restart_server(self, name: str) -> None:
        """Starts a killed server again and waits until the cluster is whole:
        a Cassandra node back in every node's view of the ring, a Redis
        server seen by every sentinel (the old primary as a replica)."""
        self.stack.up([name])
        if name in self.plan.cassandra_names():
            self.plan.wait_ring()
        if name in self.plan.redis_names():
            layout = self.plan.layout
            sentinels = [self.stack.components[s] for s in self.plan.sentinel_names()]
            eventually(
                lambda: all(sentinel.ready(layout) for sentinel in sentinels),
                SERVICE_START_SECONDS,
                interval=0.2,
                message="the sentinels never saw the primary, its replica and each other again",
            )

    def kafka_leader(self, partition: int) -> str:
        """The component name of the broker leading this partition of the
        signatures topic now."""
        return asyncio.run(self._kafka_leader(partition))

    async def _kafka_leader(self, partition: int) -> str:
        admin = AIOKafkaAdminClient(**kafka_options(self.settings))
        await start_kafka_client(admin, self.settings, "admin")
        try:
            described = await admin.describe_topics([self.client.signatures_topic])
        finally:
            await admin.close()
        leaders = {p["partition"]: p["leader"] for p in described[0]["partitions"]}
        return f"kafka-{leaders[partition]}"


def start_cluster_system(work_dir: Path) -> Iterator[ClusterSystem]:
    """Starts everything; yields; stops everything (a generator for a
    module- or session-scoped fixture)."""
    default = Layout.from_environment()
    plan = ClusterPlan(work_dir / "cluster", default.jar_cache, ClusterPorts.free())
    stack = plan.stack()
    timings: dict[str, float] = {}
    started: list[str] = []
    dev_tools: list[ServiceProcess] = []
    client: SystemClient | None = None
    try:
        began = time.monotonic()
        for step in plan.steps():
            step_began = time.monotonic()
            started.extend(step)
            stack.up(step)
            timings[f"{len(step)} servers together"] = time.monotonic() - step_began
        timings["Cassandra ring formed, more"] = plan.wait_ring()
        timings["servers"] = time.monotonic() - began
        settings = plan.settings()
        namespace = _namespace(plan, work_dir)
        env = namespace.env(settings)
        for command in (["dev-secrets"], ["migrate"]):
            step_began = time.monotonic()
            # Retried as a Kubernetes Job is (backoffLimit): on a machine this
            # busy the driver's first schema read can time out.
            for attempt in range(1, START_ATTEMPTS + 1):
                result = run_cli(env, *command, timeout=300)
                if result.returncode == 0 or attempt == START_ATTEMPTS:
                    break
                timings[f"petitions {command[0]} retried"] = attempt
            assert result.returncode == 0, f"petitions {command[0]} failed:\n{result.stdout}\n{result.stderr}"
            timings[command[0]] = time.monotonic() - step_began
        logs = plan.layout.logs()
        for name, (module, arguments) in {
            "devidp": ("services.devidp", ["--secrets-dir", str(namespace.secrets_dir)]),
            "devidp-identified": ("services.devidp", ["--secrets-dir", str(namespace.secrets_dir)]),
            "devidp-adults": ("services.devidp", ["--secrets-dir", str(namespace.secrets_dir)]),
            "devsmtp": ("services.devsmtp", ["--mail-dir", str(namespace.mail_dir)]),
        }.items():
            tool = start_service(name, module, ["--port", str(namespace.ports[name]), *arguments], env, {}, logs)
            dev_tools.append(tool)
            wait_http(tool, namespace.ports[name])
        services = {
            service.name: service
            for service in plan.services(gateway_env=lambda port: gateway_env(namespace))
            if service.kind != "tcp"  # the namespace's own dev tools are above
        }
        step_began = time.monotonic()
        # Both processes of a service at once, the services in order (each
        # may ask the one before it when it starts).
        for group in _groups(services):
            _start_supervised(plan, env, group, timings)
        timings["services"] = time.monotonic() - step_began
        client = SystemClient(namespace, settings)
        yield ClusterSystem(plan, stack, settings, namespace, env, services, client, timings)
    finally:
        if client is not None:
            client.close()
        for planned in reversed(plan.services()):
            processes.stop(ProcessFiles.under(plan.run_dir, planned.name), 20)
        for tool in reversed(dev_tools):
            tool.stop()
        # A throw-away cluster in a temporary directory: its servers are
        # killed, not stopped (Cassandra's clean stop flushes every memtable:
        # about a minute of the suite on 2 cores, for data nobody reads).
        for name in reversed([name for name in stack.order if name in started]):
            stack.kill(name)
        _keep_logs(plan.layout.logs())


def _namespace(plan: ClusterPlan, work_dir: Path) -> Namespace:
    namespace = Namespace(work_dir / "system", uuid.uuid4().hex[:8], 0)
    namespace.work_dir.mkdir(parents=True, exist_ok=True)
    ports = plan.ports
    namespace.ports.update(
        {
            "devidp": ports.service("devidp"),
            "devidp-identified": ports.service("devidp-identified"),
            "devidp-adults": free_port(),
            # The services' PETITIONS_SMTP_PORT is the plan's devsmtp.
            "devsmtp": ports.service("devsmtp"),
            "gateway": ports.service("gateway"),
            "gateway-metrics": ports.service("gateway-1-metrics"),
        }
    )
    for name in ("identity", "petitions", "signing", "tally"):
        namespace.ports[name] = ports.service(name)
        namespace.ports[f"{name}-metrics"] = ports.service(f"{name}-1-metrics")
    write_petition_types(namespace.petition_types_file)
    return namespace


def _groups(services: dict[str, Service]) -> list[list[Service]]:
    groups: dict[str, list[Service]] = {}
    for service in services.values():
        groups.setdefault(service.module, []).append(service)
    return list(groups.values())


def _start(plan: ClusterPlan, env: dict[str, str], service: Service) -> None:
    files = ProcessFiles.under(plan.run_dir, service.name)
    processes.start(files, service.argv(plan.layout), {**env, **service.env()}, REPO)


def _wait(plan: ClusterPlan, service: Service, timeout: float) -> float:
    return processes.wait_ready(ProcessFiles.under(plan.run_dir, service.name), service.ready, timeout)


def _start_supervised(plan: ClusterPlan, env: dict[str, str], group: list[Service], timings: dict[str, float]) -> None:
    """Starts a service's processes and waits for them; one that exits
    during start-up is started again, up to START_ATTEMPTS times, as a
    supervisor would (on a machine this busy, a first Cassandra connection
    can time out), and counted in timings."""
    for service in group:
        _start(plan, env, service)
    for service in group:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                _wait(plan, service, SERVICE_START_SECONDS)
                break
            except StartFailed:
                if attempt == START_ATTEMPTS:
                    raise
                timings[f"{service.name} restarted at start-up"] = attempt
                _start(plan, env, service)


def _keep_logs(logs: Path) -> None:
    target = REPO / "test-artifacts" / "cluster-logs"
    target.mkdir(parents=True, exist_ok=True)
    for log in logs.glob("*.log"):
        shutil.copyfile(log, target / log.name)


@pytest.fixture(scope="module")
def cluster_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSystem]:
    yield from start_cluster_system(tmp_path_factory.mktemp("cluster-profile"))
