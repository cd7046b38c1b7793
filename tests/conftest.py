"""Session fixtures: the real local stack, and the project's services
started as processes in a namespace of their own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from servicekit.settings import CommonSettings
from servicekit.stores import cassandra_cluster
from tests.harness import (
    REPO,
    Namespace,
    PrivateRedis,
    ServiceProcess,
    free_port,
    gateway_env,
    run_cli,
    start_service,
    wait_http,
    wait_ready,
    wait_serving,
    write_petition_types,
)
from tests.system import SystemClient

# Markers of the tests that run after the others, in this order.
LATE_PHASES = ("legislature_end", "audit", "destructive")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that end the session's legislature (archiving every petition of
    it) run after the others, which use petitions of that legislature;
    audits run after that, over what the whole suite wrote; tests that wipe
    shared state run after the audits."""

    def phase(item: pytest.Item) -> int:
        marked = [order for order, name in enumerate(LATE_PHASES, start=1) if item.get_closest_marker(name)]
        return max(marked, default=0)

    items.sort(key=phase)
    _timeouts.update({item.nodeid: _timeout_of(item) for item in items})


# A test that takes more than this share of its timeout on this machine is
# one busy CI host away from failing: the run ends with a list of them.
TIMEOUT_SHARE_WARNED = 0.5
_timeouts: dict[str, float] = {}
_durations: dict[str, float] = {}


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # pytest-timeout counts setup, call and teardown together.
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    close = sorted(
        (
            (seconds / _timeouts[nodeid], seconds, nodeid)
            for nodeid, seconds in _durations.items()
            if _timeouts.get(nodeid) and seconds > TIMEOUT_SHARE_WARNED * _timeouts[nodeid]
        ),
        reverse=True,
    )
    if close:
        terminalreporter.section(f"tests past {TIMEOUT_SHARE_WARNED:.0%} of their timeout")
        for share, seconds, nodeid in close:
            terminalreporter.write_line(f"{seconds:7.1f} s  {share:4.0%} of {_timeouts[nodeid]:g} s  {nodeid}")


# Redis database for test sessions; the developer's system uses database 0.
# Two sessions run side by side only with different databases (each flushes
# its own at start and end).
TEST_REDIS_DB = int(os.environ.get("PETITIONS_TEST_REDIS_DB", "1"))

SERVICES = {
    "identity": "services.identity",
    "petitions": "services.petitions",
    "signing": "services.signing",
    "tally": "services.tally",
}


@pytest.fixture(scope="session")
def stack() -> CommonSettings:
    """The local stack, started if it is not running (idempotent)."""
    result = subprocess.run(
        [sys.executable, "-m", "deploy.local.stack", "up"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"the local stack did not start:\n{result.stdout}\n{result.stderr}")
    return CommonSettings()


@pytest.fixture(scope="session")
def namespace(stack: CommonSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    namespace = Namespace(tmp_path_factory.mktemp("system"), uuid.uuid4().hex[:8], TEST_REDIS_DB)
    for name in (
        "devidp",
        "devidp-identified",
        "devidp-adults",
        "devsmtp",
        "identity",
        "petitions",
        "signing",
        "tally",
        "identity-metrics",
        "petitions-metrics",
        "signing-metrics",
        "tally-metrics",
        "gateway",
        "gateway-metrics",
    ):
        namespace.ports[name] = free_port()
    write_petition_types(namespace.petition_types_file)
    redis_db = redis.Redis.from_url(namespace.env(stack)["PETITIONS_REDIS_URL"])
    redis_db.flushdb()
    yield namespace
    redis_db.flushdb()
    redis_db.close()
    _drop_namespace(stack, namespace)


def _drop_namespace(stack: CommonSettings, namespace: Namespace) -> None:
    cluster = cassandra_cluster(stack.cassandra_hosts, stack.cassandra_port)
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {namespace.keyspace}", timeout=60)
    finally:
        cluster.shutdown()

    async def delete_topics() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(namespace.topic_prefix)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    asyncio.run(delete_topics())


@pytest.fixture(scope="session")
def redis_url(stack: CommonSettings, namespace: Namespace) -> str:
    """The test session's Redis database, for tests of Redis-backed pieces."""
    return namespace.env(stack)["PETITIONS_REDIS_URL"]


@pytest.fixture(scope="session")
def system(stack: CommonSettings, namespace: Namespace) -> Iterator[SystemClient]:
    env = namespace.env(stack)
    logs = namespace.work_dir / "logs"
    logs.mkdir()
    for command in (["dev-secrets"], ["migrate"]):
        result = run_cli(env, *command)
        assert result.returncode == 0, f"petitions {command[0]} failed:\n{result.stdout}\n{result.stderr}"
    processes: list[ServiceProcess] = []
    try:
        dev_tools = {
            "devidp": ("services.devidp", ["--secrets-dir", str(namespace.secrets_dir)]),
            "devidp-identified": ("services.devidp", ["--secrets-dir", str(namespace.secrets_dir)]),
            "devidp-adults": ("services.devidp", ["--secrets-dir", str(namespace.secrets_dir)]),
            "devsmtp": ("services.devsmtp", ["--mail-dir", str(namespace.mail_dir)]),
        }
        for name, (module, arguments) in dev_tools.items():
            tool = start_service(name, module, ["--port", str(namespace.ports[name]), *arguments], env, {}, logs)
            processes.append(tool)
            wait_http(tool, namespace.ports[name])
        for name, module in SERVICES.items():
            service = start_service(
                name,
                module,
                [],
                env,
                {
                    "PETITIONS_GRPC_ADDRESS": namespace.address(name),
                    "PETITIONS_METRICS_PORT": str(namespace.ports[f"{name}-metrics"]),
                },
                logs,
            )
            processes.append(service)
            wait_serving(service, namespace.address(name))
        gateway = start_service("gateway", "services.gateway", [], env, gateway_env(namespace), logs)
        processes.append(gateway)
        wait_ready(gateway, f"{namespace.gateway_url}/readyz")
        client = SystemClient(namespace, stack)
        yield client
        client.close()
    finally:
        for process in reversed(processes):
            process.stop()
        _keep_logs(logs)


def _keep_logs(logs: Path) -> None:
    """Copies the services' logs where CI keeps artefacts."""
    target = REPO / "test-artifacts" / "logs"
    target.mkdir(parents=True, exist_ok=True)
    for log in logs.glob("*.log"):
        (target / log.name).write_bytes(log.read_bytes())


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
