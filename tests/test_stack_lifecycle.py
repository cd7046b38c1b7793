"""The local stack's own lifecycle, through its command line: a second,
isolated stack (own run directory, own ports) is started, written to,
stopped, started again, and must still hold what was written.

It never touches the developer's stack on the default ports, which may be
running at the same time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from servicekit.stores import cassandra_cluster
from tests.harness import REPO, free_port

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(420)]

COMPONENTS = ("redis", "kafka", "cassandra")
PORT_VARIABLES = (
    "PETITIONS_REDIS_PORT",
    "PETITIONS_KAFKA_PORT",
    "PETITIONS_KAFKA_CONTROLLER_PORT",
    "PETITIONS_CASSANDRA_PORT",
    "PETITIONS_CASSANDRA_STORAGE_PORT",
    "PETITIONS_CASSANDRA_JMX_PORT",
)


class IsolatedStack:
    """A stack of its own, driven only through `python -m deploy.local.stack`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        ports: set[int] = set()
        while len(ports) < len(PORT_VARIABLES):
            ports.add(free_port())
        self.ports = dict(zip(PORT_VARIABLES, sorted(ports), strict=True))
        self.env = {**os.environ, "PETITIONS_RUN_DIR": str(run_dir), **{k: str(v) for k, v in self.ports.items()}}

    def cli(self, *args: str, timeout: float = 240) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local.stack", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"stack {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def pid(self, name: str) -> int:
        return int((self.run_dir / "pids" / f"{name}.pid").read_text().split()[0])

    @property
    def redis_port(self) -> int:
        return self.ports["PETITIONS_REDIS_PORT"]

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['PETITIONS_KAFKA_PORT']}"

    @property
    def cassandra_port(self) -> int:
        return self.ports["PETITIONS_CASSANDRA_PORT"]


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie awaiting its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[IsolatedStack]:
    stack = IsolatedStack(tmp_path / "run")
    try:
        yield stack
    finally:
        # Whatever the test did, leave no server of this stack behind.
        subprocess.run(
            [sys.executable, "-m", "deploy.local.stack", "down"],
            cwd=REPO,
            env=stack.env,
            capture_output=True,
            timeout=180,
            check=False,
        )


def _cql(port: int, *statements: str) -> list[tuple[object, ...]]:
    """Runs the statements; returns the rows of the last one."""
    cluster = cassandra_cluster(["127.0.0.1"], port)
    try:
        session = cluster.connect()
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = [tuple(row) for row in session.execute(statement, timeout=60)]
        return rows
    finally:
        cluster.shutdown()


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume_one(bootstrap: str, topic: str) -> bytes | None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=20_000, max_records=1)
        records = [record for batch in batches.values() for record in batch]
        return records[0].value if records else None
    finally:
        await consumer.stop()


def test_data_survives_down_and_up(isolated: IsolatedStack) -> None:
    marker = uuid.uuid4().hex
    topic = f"lifecycle-{marker}"

    started = isolated.cli("up", *COMPONENTS)
    assert all(f"{name}" in started for name in COMPONENTS), started
    assert isolated.cli("up").count("already running") == len(COMPONENTS)

    redis.Redis(port=isolated.redis_port).set("lifecycle", marker)
    _cql(
        isolated.cassandra_port,
        "CREATE KEYSPACE lifecycle WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE lifecycle.marks (id text PRIMARY KEY, value text)",
        f"INSERT INTO lifecycle.marks (id, value) VALUES ('mark', '{marker}')",
    )
    asyncio.run(_produce(isolated.kafka_bootstrap, topic, marker.encode()))

    pids = {name: isolated.pid(name) for name in COMPONENTS}
    stopped = isolated.cli("down")
    assert stopped.count("stopped") == len(COMPONENTS), stopped
    assert not [name for name, pid in pids.items() if _alive(pid)], "a server outlived `down`"
    assert not list((isolated.run_dir / "pids").glob("*.pid"))
    assert isolated.cli("status").count("stopped") == len(COMPONENTS)

    isolated.cli("up")
    assert redis.Redis(port=isolated.redis_port).get("lifecycle") == marker.encode()
    assert _cql(isolated.cassandra_port, "SELECT value FROM lifecycle.marks WHERE id = 'mark'") == [(marker,)]
    assert asyncio.run(_consume_one(isolated.kafka_bootstrap, topic)) == marker.encode()

    # A crash (SIGKILL) loses nothing Redis acknowledged: appendonly writes
    # each command to the file before the reply goes out.
    redis.Redis(port=isolated.redis_port).set("after-restart", marker)
    redis_pid = isolated.pid("redis")
    assert "killed" in isolated.cli("kill", "redis")
    assert not _alive(redis_pid)
    isolated.cli("up", "redis")
    assert redis.Redis(port=isolated.redis_port).get("after-restart") == marker.encode()

    isolated.cli("down")
    assert not [name for name in COMPONENTS if (isolated.run_dir / "pids" / f"{name}.pid").exists()]


def test_a_port_taken_by_another_program_is_refused_naming_the_component(isolated: IsolatedStack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", isolated.redis_port))
        squatter.listen()
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local.stack", "up", "redis"],
            cwd=REPO,
            env=isolated.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"redis: port {isolated.redis_port} is in use" in result.stderr
    assert not list((isolated.run_dir / "pids").glob("*.pid"))
