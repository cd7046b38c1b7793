"""The capacity model's inputs, measured per ACCEPTED signature on the
running local system (`make up`, or one like it in another run directory),
in one run, so the ratios between processes are measured together:

    .venv/bin/python -m loadtests.bench_capacity [--run-dir .run] [--signatures 10000] [--backlog 10000]

Phases, each a window of its own (CPU and store counters read before and
after it; the window ends only once the tally has applied everything the
phase had accepted, so the tally's and the stores' work on it is inside):

1. idle: every process of the system with no load, for --idle-seconds; the
   per-signature figures are given gross and net of this.
2. backlog: --backlog accepted signatures of distinct people published
   straight to the signatures topic (bench_tally's publisher) faster than
   the running tally applies them: one consumer's signatures/s while it is
   behind (its own metrics) and its CPU over that span, the bound on what
   one consumer, and so one partition, applies. First, while the keyspace
   holds least.
3. sign: --signatures Sign calls, each a new person on one hot petition,
   straight to signing's gRPC port (--concurrency in flight over several
   connections, so both signing processes get calls), each with an
   idempotency key and a client address of its own, as the gateway sends
   them (so signing's receipt and per-address limit cost what they cost in
   production). Measured: CPU seconds per accepted signature of every
   process (/proc/<pid>/stat utime + stime, pids from the run directory's
   pid files), Redis commands per signature (INFO commandstats: calls and
   microseconds per command, the commands a Lua script runs included),
   Kafka bytes appended per signature (the topics' partition .log files in
   the broker's log directories), Cassandra mutations per signature
   (system_views.local_write_latency and coordinator_write_latency, per
   table) and bytes on disk per signature (each table's SSTables after a
   flush, nodetool run from the Cassandra process's own classpath; skipped
   with --no-flush).
4. gateway: --gateway-signatures through the HTTP API (POST
   /api/v1/petitions/{id}/signatures with a bearer credential, an
   Idempotency-Key and an X-Forwarded-For address per person): the same
   figures with the gateway's CPU. The gateway believes X-Forwarded-For
   only when started with PETITIONS_TRUSTED_PROXY_HEADER=X-Forwarded-For
   and PETITIONS_TRUSTED_PROXY_NETWORKS='["127.0.0.0/8"]'; otherwise every
   call comes from 127.0.0.1 and signing's per-address limit refuses most
   (the table shows the refusals).
5. sign-in: --sign-ins ExchangeIdToken calls with ID tokens minted by the
   dev provider beforehand (its minting is outside the window): identity's
   CPU and Redis commands per credential issued (one per signer).

The stores are found as the services find them (PETITIONS_KAFKA_BOOTSTRAP,
PETITIONS_REDIS_URL, PETITIONS_CASSANDRA_PORT, ...), the services at
`make up`'s addresses (PETITIONS_SIGNING_ADDRESS, ... as the load tests
take them), the processes in --run-dir's pid files. For figures that are
this system's alone, run it against a `make up` of its own stores (another
run directory and store ports: docs/capacity.md says how), not against
stores that test sessions share.

Nothing is asserted; the figures are printed as a table and written to
loadtests/results/<time>-capacity/figures.json. Everything shares the
machine's cores with whatever else runs (the table's "everything else" is
the rest of the machine's busy time): CPU seconds per signature are the
figure to read, not the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.processes import ProcessFiles, running_pid
from loadtests.bench_signing import channels, percentiles, signing_key
from loadtests.bench_tally import (
    CpuSample,
    Row,
    code_version,
    cores_used,
    cpu_seconds,
    publish_backlog,
    sample_cpu,
    say,
)
from loadtests.petition_admin import create_petition
from loadtests.population import Population
from loadtests.scenarios import RESULTS_DIR, LoadTestSettings
from petitions.v1 import identity_pb2, identity_pb2_grpc, signing_pb2, signing_pb2_grpc
from servicekit import signer_credential
from servicekit.settings import REPO_ROOT, CommonSettings
from servicekit.signer_credential import SignerClaims
from servicekit.stores import CassandraSession, redis_client

# The processes of `make up` (deploy/local/system.py), by pid-file name.
# devidp and devsmtp are development stand-ins (FranceConnect, a mail
# relay): shown, never counted in a sizing.
SERVICES = ("signing", "signing-2", "tally", "identity", "petitions", "gateway")
STORES = ("kafka", "cassandra", "redis")
DEV_ONLY = ("devidp", "devidp-identified", "devsmtp")
BENCH_CLIENT = "bench client"
# The tally's metrics port under `make up`.
TALLY_METRICS = "http://127.0.0.1:9163/metrics"
# How often the end of a window is looked for (the tally's metrics).
POLL_SECONDS = 0.2
# Once this long has passed without the tally applying everything accepted
# in a window, the window ends anyway (and says so).
DRAIN_SECONDS = 120.0
# Client addresses are drawn from 10.0.0.0/8, one per person, so no
# per-address limit is reached (a national crowd comes from millions).
ADDRESS_SPACE = 1 << 24

Outcome = tuple[int, list[float], int]


# --- the system under test -----------------------------------------------------


@dataclass(frozen=True)
class System:
    run_dir: Path
    stores: CommonSettings
    target: LoadTestSettings
    gateway_url: str
    devidp_url: str
    tally_metrics: str

    def pids(self) -> dict[str, int]:
        pids = {}
        for name in (*SERVICES, *STORES, *DEV_ONLY):
            pid = running_pid(ProcessFiles.under(self.run_dir, name))
            if pid is not None:
                pids[name] = pid
        pids[BENCH_CLIENT] = os.getpid()
        return pids


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def java_property(argv: Iterable[str], name: str) -> str | None:
    prefix = f"-D{name}="
    return next((a[len(prefix) :] for a in argv if a.startswith(prefix)), None)


def kafka_log_dirs(run_dir: Path) -> list[Path]:
    """The broker's log directories: where its server.properties says."""
    dirs = []
    for properties in (run_dir / "conf").glob("kafka*/server.properties"):
        for line in properties.read_text().splitlines():
            if line.startswith("log.dirs="):
                dirs += [Path(d) for d in line.split("=", 1)[1].split(",")]
    return dirs


def kafka_topic_bytes(log_dirs: list[Path]) -> dict[str, int]:
    """Bytes in each topic's partition .log files (its records, as stored:
    batches with their headers, after the producer's compression). Index
    files are left out: Kafka preallocates them."""
    sizes: dict[str, int] = {}
    for log_dir in log_dirs:
        for partition in log_dir.iterdir() if log_dir.is_dir() else ():
            match = re.fullmatch(r"(.+)-(\d+)", partition.name)
            if not match or not partition.is_dir():
                continue
            total = 0
            for segment in partition.glob("*.log"):
                # A segment may be deleted by retention between glob and stat.
                with contextlib.suppress(FileNotFoundError):
                    total += segment.stat().st_size
            sizes[match.group(1)] = sizes.get(match.group(1), 0) + total
    return sizes


@dataclass(frozen=True)
class Cassandra:
    """What a flush and the data directory need, from the running node's
    own command line (the project sets no nodetool up)."""

    pid: int
    data_dir: Path
    jmx_port: str
    java: list[str]

    @classmethod
    def of(cls, pid: int) -> Cassandra | None:
        argv = command_line(pid)
        storage = java_property(argv, "cassandra.storagedir")
        jmx = java_property(argv, "cassandra.jmx.local.port")
        if not storage or not jmx or "-cp" not in argv:
            return None
        classpath = argv[argv.index("-cp") + 1]
        # Cassandra's classes need the same module openings as the server.
        openings = [f"{a}={argv[i + 1]}" for i, a in enumerate(argv) if a in ("--add-exports", "--add-opens")]
        java = [argv[0], *openings, "-cp", classpath, "org.apache.cassandra.tools.NodeTool"]
        return cls(pid, Path(storage) / "data", jmx, java)

    def flush(self, keyspace: str) -> str | None:
        """Writes the keyspace's memtables to disk; None, or why it failed."""
        result = subprocess.run(
            [*self.java, "-h", "127.0.0.1", "-p", self.jmx_port, "flush", keyspace],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return None if result.returncode == 0 else (result.stdout + result.stderr).strip()[-500:]

    def table_bytes(self, keyspace: str) -> dict[str, int]:
        """Bytes of each table's SSTables (every component) on disk. By
        table name, whatever the schema is: the directories are
        <table>-<id>."""
        sizes: dict[str, int] = {}
        for directory in (self.data_dir / keyspace).glob("*-*"):
            table = directory.name.rsplit("-", 1)[0]
            size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
            sizes[table] = sizes.get(table, 0) + size
        return sizes


# --- counters read before and after a window --------------------------------------


@dataclass(frozen=True)
class Counters:
    cpu: CpuSample
    at: float
    redis_commands: dict[str, tuple[int, int]]  # command: (calls, microseconds)
    kafka_bytes: dict[str, int]  # topic: bytes
    cassandra_local: dict[str, int]  # table: mutations applied on this node
    cassandra_coordinated: dict[str, int]  # table: write requests coordinated
    tally_applied: float  # messages the running tally has applied


async def metrics(url: str) -> dict[str, float]:
    """A service's metrics, by sample name and sorted labels."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(url) as response,
    ):
        text = await response.text()
    return {
        sample.name + json.dumps(dict(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def tally_applied(url: str) -> float:
    values = await metrics(url)
    return sum(v for k, v in values.items() if k.startswith("petitions_tally_messages_applied_total{"))


class Probe:
    """Reads every counter of the system at one moment."""

    def __init__(self, system: System, cassandra: CassandraSession):
        self.system = system
        self._redis = redis_client(system.stores)
        self._cassandra = cassandra
        self._log_dirs = kafka_log_dirs(system.run_dir)
        self._local = cassandra.prepare(
            "SELECT table_name, count FROM system_views.local_write_latency WHERE keyspace_name = ?"
        )
        self._coordinated = cassandra.prepare(
            "SELECT table_name, count FROM system_views.coordinator_write_latency WHERE keyspace_name = ?"
        )

    async def close(self) -> None:
        await self._redis.aclose()

    async def read(self, pids: dict[str, int]) -> Counters:
        cpu = sample_cpu(pids)
        stats: dict[str, Any] = await self._redis.info("commandstats")
        keyspace = self.system.stores.keyspace
        local = await self._cassandra.execute(self._local, (keyspace,))
        coordinated = await self._cassandra.execute(self._coordinated, (keyspace,))
        return Counters(
            cpu=cpu,
            at=time.perf_counter(),
            redis_commands={
                name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()
            },
            kafka_bytes=kafka_topic_bytes(self._log_dirs),
            cassandra_local={r.table_name: int(r.count) for r in local},
            cassandra_coordinated={r.table_name: int(r.count) for r in coordinated},
            tally_applied=await tally_applied(self.system.tally_metrics),
        )


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


@dataclass
class Window:
    """What one phase cost, per accepted signature (or credential)."""

    name: str
    accepted: int
    refused: dict[str, int]
    seconds: float  # the whole window, drain included
    load_seconds: float  # calls only
    latency_p50_ms: float
    latency_p99_ms: float
    cpu_seconds: dict[str, float]  # process: CPU seconds over the window
    idle_cpu_seconds: dict[str, float]  # process: what it would have used idle over as long
    machine_cpu_seconds: float
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_usec: dict[str, int] = field(default_factory=dict)
    kafka_bytes: dict[str, int] = field(default_factory=dict)
    cassandra_local: dict[str, int] = field(default_factory=dict)
    cassandra_coordinated: dict[str, int] = field(default_factory=dict)
    tally_applied: float = 0.0
    drains: bool = True  # the window waited for the tally
    drained: bool = True
    # Growth on disk of each table, between flushes before and after.
    table_bytes: dict[str, int] = field(default_factory=dict)
    flush_error: str | None = None

    def per(self, value: float) -> float:
        return value / self.accepted if self.accepted else 0.0


def window_of(
    name: str,
    before: Counters,
    after: Counters,
    idle: dict[str, float],
    accepted: int,
    refused: dict[str, int],
    load_seconds: float,
    latencies: list[float],
    drains: bool,
    drained: bool,
) -> Window:
    seconds = after.at - before.at
    cpu = {n: after.cpu.processes[n] - s for n, s in before.cpu.processes.items() if n in after.cpu.processes}
    calls = deltas(
        {k: v[0] for k, v in before.redis_commands.items()}, {k: v[0] for k, v in after.redis_commands.items()}
    )
    # The probe's own INFO, one per reading.
    calls["info"] = calls.get("info", 1) - 1
    usec = deltas(
        {k: v[1] for k, v in before.redis_commands.items()}, {k: v[1] for k, v in after.redis_commands.items()}
    )
    cuts = percentiles(latencies)
    return Window(
        name=name,
        accepted=accepted,
        refused=refused,
        seconds=seconds,
        load_seconds=load_seconds,
        latency_p50_ms=cuts[49] * 1000,
        latency_p99_ms=cuts[98] * 1000,
        cpu_seconds=cpu,
        idle_cpu_seconds={n: idle.get(n, 0.0) * seconds for n in cpu},
        machine_cpu_seconds=after.cpu.machine - before.cpu.machine,
        redis_calls={k: v for k, v in calls.items() if v},
        redis_usec=usec,
        kafka_bytes=deltas(before.kafka_bytes, after.kafka_bytes),
        cassandra_local=deltas(before.cassandra_local, after.cassandra_local),
        cassandra_coordinated=deltas(before.cassandra_coordinated, after.cassandra_coordinated),
        tally_applied=after.tally_applied - before.tally_applied,
        drains=drains,
        drained=drained,
    )


async def wait_applied(system: System, goal: float) -> bool:
    """Waits until the running tally has applied `goal` messages (its
    counter), so its work and the stores' on this window's signatures fall
    inside the window; False if that took longer than DRAIN_SECONDS."""
    deadline = time.perf_counter() + DRAIN_SECONDS
    while time.perf_counter() < deadline:
        if await tally_applied(system.tally_metrics) >= goal:
            return True
        await asyncio.sleep(POLL_SECONDS)
    return False


# --- loads ----------------------------------------------------------------------------


def random_address(rng: random.Random) -> str:
    n = rng.randrange(ADDRESS_SPACE)
    return f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


def mint_credentials(secrets: Path, count: int, seed: int) -> list[str]:
    """Signer credentials of distinct people, minted in-process with
    identity's key (as bench_signing does), placed like France's population."""
    key = signing_key(secrets)
    population = Population(seed)
    credentials = []
    for _ in range(count):
        country, territory = population.place()
        claims = SignerClaims(uuid.uuid4().hex, "oidc", "bench", country, territory, True)
        credentials.append(signer_credential.issue(key, claims, 3600)[0])
    return credentials


@dataclass
class Tally:
    """Outcomes of a load: what was accepted and why the rest was not."""

    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


async def closed_loop(calls: int, concurrency: int, call: Callable[[int], Awaitable[bool]]) -> None:
    """Exactly `calls` calls, `concurrency` at a time."""
    queue = iter(range(calls))

    async def worker() -> None:
        for i in queue:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sign_grpc(
    address: str, petition: str, credentials: list[str], concurrency: int, connections: int, outcomes: Tally
) -> None:
    rng = random.Random(1)
    requests = [
        signing_pb2.SignRequest(
            credential=c, petition_id=petition, idempotency_key=uuid.uuid4().hex, client_ip=random_address(rng)
        )
        for c in credentials
    ]
    async with channels(address, connections) as opened:
        stubs = [signing_pb2_grpc.SigningStub(channel) for channel in opened]

        async def sign(i: int) -> bool:
            began = time.perf_counter()
            try:
                reply = await stubs[i % len(stubs)].Sign(requests[i], timeout=30)
            except grpc.aio.AioRpcError as error:
                outcomes.refuse(error.code().name)
                return False
            if reply.outcome != signing_pb2.SignResponse.OUTCOME_ACCEPTED:
                outcomes.refuse(signing_pb2.SignResponse.Outcome.Name(reply.outcome))
                return False
            outcomes.accepted += 1
            outcomes.latencies.append(time.perf_counter() - began)
            return True

        await closed_loop(len(requests), concurrency, sign)


async def sign_http(gateway: str, petition: str, credentials: list[str], concurrency: int, outcomes: Tally) -> None:
    rng = random.Random(2)
    url = f"{gateway}/api/v1/petitions/{petition}/signatures"
    headers = [
        {
            "Authorization": f"Bearer {c}",
            "Idempotency-Key": uuid.uuid4().hex,
            "X-Forwarded-For": random_address(rng),
        }
        for c in credentials
    ]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def sign(i: int) -> bool:
            began = time.perf_counter()
            try:
                async with http.post(url, headers=headers[i]) as response:
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError) as error:
                outcomes.refuse(type(error).__name__)
                return False
            if response.status != 200:
                outcomes.refuse(f"HTTP {response.status} {body.get('error', {}).get('reason', '')}".strip())
                return False
            if body.get("outcome") != "OUTCOME_ACCEPTED":
                outcomes.refuse(str(body.get("outcome")))
                return False
            outcomes.accepted += 1
            outcomes.latencies.append(time.perf_counter() - began)
            return True

        await closed_loop(len(credentials), concurrency, sign)


async def mint_id_tokens(devidp: str, audience: str, count: int, concurrency: int) -> list[str]:
    """ID tokens of distinct personas from the dev provider (as
    FranceConnect would hand them to the gateway)."""
    population = Population(3)
    bodies = []
    for _ in range(count):
        _, territory = population.place()
        bodies.append(
            {"persona": f"capacity-{uuid.uuid4().hex[:12]}", "audience": audience, "territory": territory or "75"}
        )
    tokens: list[str] = [""] * count
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def mint(i: int) -> bool:
            async with http.post(f"{devidp}/dev/id-token", json=bodies[i]) as response:
                response.raise_for_status()
                tokens[i] = str((await response.json())["id_token"])
            return True

        await closed_loop(count, concurrency, mint)
    return tokens


async def sign_in(address: str, tokens: list[str], concurrency: int, outcomes: Tally) -> None:
    rng = random.Random(4)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = identity_pb2_grpc.IdentityStub(channel)

        async def exchange(i: int) -> bool:
            began = time.perf_counter()
            try:
                await stub.ExchangeIdToken(
                    identity_pb2.ExchangeIdTokenRequest(id_token=tokens[i], client_ip=random_address(rng)), timeout=30
                )
            except grpc.aio.AioRpcError as error:
                outcomes.refuse(error.code().name)
                return False
            outcomes.accepted += 1
            outcomes.latencies.append(time.perf_counter() - began)
            return True

        await closed_loop(len(tokens), concurrency, exchange)


# --- running a window ----------------------------------------------------------------------


async def measured(
    name: str,
    system: System,
    probe: Probe,
    idle: dict[str, float],
    load: Callable[[Tally], Awaitable[None]],
    drain: bool,
) -> Window:
    """Runs load between two readings of every counter; with drain, the
    window closes once the tally has applied every message the load
    produced (the accepted signatures: one message each)."""
    pids = system.pids()
    outcomes = Tally()
    before = await probe.read(pids)
    began = time.perf_counter()
    await load(outcomes)
    load_seconds = time.perf_counter() - began
    drained = True
    if drain:
        drained = await wait_applied(system, before.tally_applied + outcomes.accepted)
    after = await probe.read(pids)
    window = window_of(
        name, before, after, idle, outcomes.accepted, outcomes.refused, load_seconds, outcomes.latencies, drain, drained
    )
    say(
        f"  {name}: {outcomes.accepted:,} accepted in {load_seconds:.1f} s"
        f" ({outcomes.accepted / max(load_seconds, 1e-9):,.0f}/s), window {window.seconds:.1f} s,"
        f" refused {outcomes.refused or 0}" + ("" if drained else "; the tally did NOT apply everything in time")
    )
    return window


async def idle_cores(system: System, seconds: float) -> dict[str, float]:
    pids = system.pids()
    before = sample_cpu(pids)
    await asyncio.sleep(seconds)  # measuring idle use over a span of time is the point
    return cores_used(before, sample_cpu(pids))


def others_seconds(window: Window) -> float:
    """The machine's busy time not spent in a measured process."""
    return max(0.0, window.machine_cpu_seconds - sum(window.cpu_seconds.values()))


# --- report ------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def cpu_rows(window: Window, unit: str) -> list[Row]:
    rows: list[Row] = []
    order = [*SERVICES, *STORES, BENCH_CLIENT, *DEV_ONLY]
    for name in sorted(window.cpu_seconds, key=order.index):
        gross = window.per(window.cpu_seconds[name])
        net = window.per(max(0.0, window.cpu_seconds[name] - window.idle_cpu_seconds[name]))
        if gross < 5e-6 and name in DEV_ONLY:
            continue
        rows.append((f"{window.name}: CPU per {unit}, {name}", ms(gross), ms(net), "MEASURED"))
    path = [n for n in (*SERVICES, *STORES) if n in window.cpu_seconds]
    total = sum(window.cpu_seconds[n] for n in path)
    net_total = sum(max(0.0, window.cpu_seconds[n] - window.idle_cpu_seconds[n]) for n in path)
    rows.append(
        (
            f"{window.name}: CPU per {unit}, services + stores",
            ms(window.per(total)),
            ms(window.per(net_total)),
            "MEASURED",
        )
    )
    rows.append(
        (f"{window.name}: machine busy elsewhere (not measured processes)", f"{others_seconds(window):.1f} s", "", "")
    )
    return rows


def store_rows(window: Window, unit: str) -> list[Row]:
    rows: list[Row] = []
    total_calls = sum(window.redis_calls.values())
    rows.append((f"{window.name}: Redis commands per {unit}", f"{window.per(total_calls):.2f}", "", "MEASURED"))
    for command, calls in sorted(window.redis_calls.items(), key=lambda i: -i[1]):
        if window.per(calls) >= 0.01:
            usec = window.per(window.redis_usec.get(command, 0))
            rows.append((f"  {command}", f"{window.per(calls):.2f}", f"{usec:.1f} µs", "MEASURED"))
    for topic, size in sorted(window.kafka_bytes.items(), key=lambda i: -i[1]):
        if window.per(size) >= 1:
            rows.append(
                (
                    f"{window.name}: Kafka bytes appended per {unit}, {topic}",
                    f"{window.per(size):.0f} B",
                    "",
                    "MEASURED",
                )
            )
    for table, count in sorted(window.cassandra_local.items(), key=lambda i: -i[1]):
        coordinated = window.cassandra_coordinated.get(table, 0)
        rows.append(
            (
                f"{window.name}: Cassandra mutations per {unit}, {table}",
                f"{window.per(count):.3f}",
                f"{window.per(coordinated):.3f} requests",
                "MEASURED",
            )
        )
    for table, size in sorted(window.table_bytes.items(), key=lambda i: -i[1]):
        if window.per(size) >= 1:
            rows.append(
                (
                    f"{window.name}: Cassandra bytes on disk per {unit}, {table} (RF 1)",
                    f"{window.per(size):.0f} B",
                    "after a flush",
                    "MEASURED",
                )
            )
    if window.flush_error:
        rows.append((f"{window.name}: Cassandra bytes on disk", "not measured", window.flush_error[:60], ""))
    return rows


def summary_rows(window: Window, unit: str) -> list[Row]:
    return [
        (f"{window.name}: {unit}s accepted", f"{window.accepted:,}", f"refused {sum(window.refused.values()):,}", ""),
        (
            f"{window.name}: rate (calls only) / p50 / p99",
            f"{window.accepted / max(window.load_seconds, 1e-9):,.0f}/s",
            f"{window.latency_p50_ms:.0f} ms / {window.latency_p99_ms:.0f} ms",
            "",
        ),
        (
            f"{window.name}: window" + (" (until the tally applied all)" if window.drains else ""),
            f"{window.seconds:.1f} s",
            ("drained" if window.drained else "NOT drained") if window.drains else "",
            "",
        ),
    ]


def print_rows(rows: list[Row]) -> None:
    header = ("figure", "per unit (gross)", "net of idle / detail", "kind")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    say()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def every_process() -> dict[int, tuple[float, str]]:
    """CPU seconds and command line of every process on the machine."""
    found: dict[int, tuple[float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        seconds = cpu_seconds(int(entry.name))
        try:
            argv = " ".join(command_line(int(entry.name))).strip()
        except OSError:
            continue
        if seconds is not None:
            found[int(entry.name)] = (seconds, argv or f"[{entry.name}]")
    return found


def what_else_ran(before: dict[int, tuple[float, str]], after: dict[int, tuple[float, str]]) -> list[str]:
    """The processes that used the most CPU over the run (those that ended
    before it did are missing), as evidence of what shared the cores."""
    used = sorted(
        ((seconds - before.get(pid, (0.0, ""))[0], pid, argv) for pid, (seconds, argv) in after.items()),
        reverse=True,
    )
    return [f"{seconds:7.1f} s  pid {pid:<7} {argv[:130]}" for seconds, pid, argv in used[:15] if seconds >= 0.5]


@dataclass(frozen=True)
class TallySample:
    at: float
    applied: float
    lag: float
    cpu: float | None


async def tally_sample(system: System, tally_pid: int) -> TallySample:
    values = await metrics(system.tally_metrics)
    applied = sum(v for k, v in values.items() if k.startswith("petitions_tally_messages_applied_total{"))
    lag = sum(v for k, v in values.items() if k.startswith("petitions_tally_consumer_lag_messages{"))
    return TallySample(time.perf_counter(), applied, lag, cpu_seconds(tally_pid))


async def backlog_rows(system: System, options: argparse.Namespace, figures: dict[str, Any]) -> list[Row]:
    """The running tally consumer's pace when it is behind: --backlog
    accepted signatures of distinct people are published straight to the
    signatures topic (bench_tally's publisher, keyed as signing keys them)
    faster than one consumer applies them; its rate is read from its own
    metrics over the span where its lag was above zero, and its CPU over
    the same span. The publisher shares the cores with it."""
    say(f"== backlog: {options.backlog:,} signatures published to the running tally's topic")
    tally_pid = system.pids().get("tally")
    if tally_pid is None:
        return [("backlog", "not measured", "no tally pid", "")]
    petition = await asyncio.to_thread(create_petition, system.target, "capacity-backlog")
    first = await tally_sample(system, tally_pid)
    publishing = asyncio.create_task(publish_backlog(system.stores, petition, options.backlog, options.seed))
    samples = [first]
    deadline = time.perf_counter() + 900
    while samples[-1].applied < first.applied + options.backlog and time.perf_counter() < deadline:
        await asyncio.sleep(POLL_SECONDS)  # the tally's metrics are a pull, not a stream
        samples.append(await tally_sample(system, tally_pid))
    published = await publishing
    behind = [s for s in samples if s.lag > 0]
    if len(behind) < 2 or behind[0].cpu is None or behind[-1].cpu is None:
        figures["backlog"] = {"messages": options.backlog, "publish_rate": options.backlog / published.seconds}
        return [("backlog: the tally never fell behind", f"≥ {options.backlog / published.seconds:,.0f}/s", "", "")]
    span = behind[-1].at - behind[0].at
    rate = (behind[-1].applied - behind[0].applied) / span
    cores = (behind[-1].cpu - behind[0].cpu) / span
    figures["backlog"] = {
        "messages": options.backlog,
        "publish_rate": options.backlog / published.seconds,
        "behind_seconds": span,
        "applied_rate": rate,
        "tally_cores": cores,
        "partitions": system.stores.signature_partitions,
        "drained": samples[-1].applied >= first.applied + options.backlog,
    }
    say(
        f"  published {options.backlog:,} in {published.seconds:.1f} s; the tally was behind for {span:.1f} s,"
        f" applying {rate:,.0f}/s with {cores:.2f} cores"
    )
    return [
        (
            "backlog: one tally consumer, signatures/s applied while behind",
            f"{rate:,.0f}/s",
            f"{system.stores.signature_partitions} partitions, {span:.0f} s",
            "MEASURED",
        ),
        ("backlog: its CPU while behind", f"{cores:.2f} cores", ms(cores / rate) if rate else "", "MEASURED"),
    ]


# --- main --------------------------------------------------------------------------------------


async def run(options: argparse.Namespace, system: System) -> dict[str, Any]:
    figures: dict[str, Any] = {"code": code_version(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    everything_before = every_process()
    windows: list[tuple[Window, str]] = []
    cassandra_session = CassandraSession(system.stores)
    await cassandra_session.start()
    probe = Probe(system, cassandra_session)
    pids = system.pids()
    figures["pids"] = pids
    say(f"processes: {', '.join(f'{n} {p}' for n, p in pids.items())}")
    missing = [n for n in (*SERVICES, *STORES) if n not in pids]
    if missing:
        say(f"not running (no live pid file in {system.run_dir}/pids): {', '.join(missing)}")
    cassandra = Cassandra.of(pids["cassandra"]) if "cassandra" in pids else None
    keyspace = system.stores.keyspace
    rows: list[Row] = []
    try:
        say(f"== idle, {options.idle_seconds:g} s")
        idle = await idle_cores(system, options.idle_seconds)
        figures["idle_cores"] = idle
        # First, while the keyspace holds least: the backlog's `petitions
        # migrate` takes longer the more rows it finds.
        if options.backlog:
            rows += await backlog_rows(system, options, figures)

        # The sizes on disk after the last flush: each window's "after" is
        # the next one's "before" (one nodetool run each; it takes seconds).
        flushed: dict[str, dict[str, int] | str] = {}

        async def flush_sizes() -> dict[str, int] | str:
            if not options.flush:
                return "--no-flush"
            if cassandra is None:
                return "no Cassandra pid"
            error = await asyncio.to_thread(cassandra.flush, keyspace)
            return cassandra.table_bytes(keyspace) if error is None else error

        async def window(name: str, unit: str, load: Callable[[Tally], Awaitable[None]], drain: bool = True) -> None:
            before = flushed.get("last") or await flush_sizes()
            measured_window = await measured(name, system, probe, idle, load, drain)
            after = flushed["last"] = await flush_sizes()
            if isinstance(before, str) or isinstance(after, str):
                measured_window.flush_error = before if isinstance(before, str) else str(after)
            else:
                measured_window.table_bytes = deltas(before, after)
            windows.append((measured_window, unit))

        if options.signatures:
            say(f"== sign (gRPC): {options.signatures:,} new people, {options.concurrency} in flight")
            credentials = await asyncio.to_thread(
                mint_credentials, system.target.secrets_dir, options.signatures, options.seed
            )
            petition = await asyncio.to_thread(create_petition, system.target, "capacity")
            await window(
                "sign",
                "signature",
                lambda outcomes: sign_grpc(
                    system.target.signing_address,
                    petition,
                    credentials,
                    options.concurrency,
                    options.connections,
                    outcomes,
                ),
            )

        if options.gateway_signatures:
            say(f"== sign (HTTP, gateway): {options.gateway_signatures:,} new people, {options.concurrency} in flight")
            gateway_credentials = await asyncio.to_thread(
                mint_credentials, system.target.secrets_dir, options.gateway_signatures, options.seed + 1
            )
            gateway_petition = await asyncio.to_thread(create_petition, system.target, "capacity")
            await window(
                "gateway",
                "signature",
                lambda outcomes: sign_http(
                    system.gateway_url, gateway_petition, gateway_credentials, options.concurrency, outcomes
                ),
            )

        if options.sign_ins:
            in_flight = max(1, options.concurrency // 4)
            say(f"== sign-in (identity): {options.sign_ins:,} ID tokens exchanged, {in_flight} in flight")
            tokens = await mint_id_tokens(system.devidp_url, system.target.devidp_audience, options.sign_ins, 16)
            await window(
                "sign-in",
                "credential",
                lambda outcomes: sign_in(system.target.identity_address, tokens, in_flight, outcomes),
                drain=False,
            )
    finally:
        await probe.close()
        await cassandra_session.stop()

    for measured_window, unit in windows:
        rows += (
            summary_rows(measured_window, unit) + cpu_rows(measured_window, unit) + store_rows(measured_window, unit)
        )
    figures["windows"] = [asdict(w) for w, _ in windows]

    print_rows(rows)
    figures["what_else_ran"] = what_else_ran(everything_before, every_process())
    say("\nCPU seconds used over the run by the busiest processes on the machine (what shared the cores):")
    for line in figures["what_else_ran"]:
        say(f"  {line}")
    load = os.getloadavg()
    figures["load_average"] = load
    say(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {multiprocessing.cpu_count()} cores")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--run-dir", type=Path, default=REPO_ROOT / ".run", help="the system's run directory (pids, Kafka config)"
    )
    parser.add_argument(
        "--signatures", type=int, default=10_000, help="Sign calls through gRPC; 0 skips (default 10000)"
    )
    parser.add_argument(
        "--gateway-signatures", type=int, default=2_000, help="Sign calls through the gateway; 0 skips (default 2000)"
    )
    parser.add_argument("--sign-ins", type=int, default=1_000, help="ExchangeIdToken calls; 0 skips (default 1000)")
    parser.add_argument("--backlog", type=int, default=10_000, help="backlog messages; 0 skips (default 10000)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument("--connections", type=int, default=8, help="gRPC connections to signing (default 8)")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle baseline (default 5)")
    parser.add_argument(
        "--no-flush", dest="flush", action="store_false", help="skip the Cassandra flush (bytes on disk)"
    )
    parser.add_argument("--gateway-url", default="http://127.0.0.1:8080")
    parser.add_argument("--devidp-url", default="http://127.0.0.1:8461", help="the anonymous dev provider")
    parser.add_argument(
        "--tally-metrics", default=TALLY_METRICS, help=f"the running tally's metrics (default {TALLY_METRICS})"
    )
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    target = LoadTestSettings()
    if not (target.secrets_dir / "identity-keys").is_dir():
        say(
            f"no identity keys in {target.secrets_dir}: run `make up` first (or set PETITIONS_SECRETS_DIR)",
            file=sys.stderr,
        )
        return 1
    system = System(
        run_dir=options.run_dir.resolve(),
        stores=CommonSettings(),
        target=target,
        gateway_url=options.gateway_url,
        devidp_url=options.devidp_url,
        tally_metrics=options.tally_metrics,
    )
    began = time.perf_counter()
    say(f"code: {code_version()}; run directory {system.run_dir}")
    figures = asyncio.run(run(options, system))
    figures["options"] = {k: str(v) for k, v in vars(options).items()}
    directory = RESULTS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-capacity"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    say(f"figures written to {directory / 'figures.json'}; runtime {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
