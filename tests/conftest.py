"""Session fixtures: the real local stack, and the project's services
started as processes in a namespace of their own."""

from __future__ import annotations

import asyncio
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
    ServiceProcess,
    free_port,
    gateway_env,
    run_cli,
    start_service,
    wait_http,
    wait_ready,
    wait_serving,
)
from tests.system import SystemClient


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Audits run after everything else, over what the whole suite wrote;
    tests that wipe shared state run after the audits."""

    def phase(item: pytest.Item) -> int:
        if item.get_closest_marker("destructive") is not None:
            return 2
        return 1 if item.get_closest_marker("audit") is not None else 0

    items.sort(key=phase)


# Redis database for test sessions; the developer's system uses database 0.
TEST_REDIS_DB = 1

SERVICES = {
    "identity": "services.identity",
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
        "devsmtp",
        "identity",
        "signing",
        "tally",
        "identity-metrics",
        "signing-metrics",
        "tally-metrics",
        "gateway",
        "gateway-metrics",
    ):
        namespace.ports[name] = free_port()
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
        admin_token = (namespace.secrets_dir / "admin-token").read_text().strip()
        client = SystemClient(namespace, stack, admin_token)
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
