"""Tally throughput and freshness against the running local system (`make up`),
in one run:

1. Backlog catch-up. In a topic prefix and consumer group of its own (the
   running system's Cassandra keyspace and Redis database), N accepted
   signatures of one hot petition (distinct people, départements weighted
   like France's, a few percent abroad) are published before any tally
   exists; then a separate tally process starts, and the run times how fast
   it drains that backlog: from the moment its gRPC health says SERVING
   until the counters' applied offsets in Redis (counted) and the group's
   committed offsets (consumed) reach the end of the log. GetTally must then
   say N, and Cassandra must hold N rows (stored). The bench topics, Redis
   keys and signature rows are deleted afterwards.
2. ack→counted latency. Against the running signing service, one new person
   signs a bench petition every 1/--rate s for --seconds (credentials minted
   in-process, as bench_signing does). For each ACCEPTED receipt: the time
   from the receipt's arrival to the first poll (every --poll-ms) that finds
   the running tally's applied offset of that partition at or past the
   receipt's offset (so its resolution is about one poll).
3. GetTally reads/s. During the same window, --read-concurrency loops of
   GetTally on that petition against the running tally, from a separate
   process; afterwards the same loops against bench_signing's bare grpc.aio
   echo service (carrying a real PetitionTally both ways): the ceiling of
   this client on this machine.

    .venv/bin/python -m loadtests.bench_tally [--messages 100000] [--seconds 15] [--rate 200]

--messages 0 skips part 1; --seconds 0 skips parts 2 and 3;
--read-concurrency 0 skips part 3 (and so shows the latency without reads:
GetTally and the consume loop share the tally's event loop).

Reading the figures. Nothing is asserted: the final table puts each figure
next to the target the issue names and their ratio (measured / target; for
the latency bound a ratio below 1 meets it). Backlog rates: "while
consuming" runs from the last poll (every 20 ms) that saw nothing counted to
the first that saw everything counted: the tally's own pace, without its
start-up or joining the group. "From SERVING" starts when its gRPC health
first says SERVING (polled every 10 ms) and leaves out what was counted
before it: the consume loop starts before the gRPC server does. "From
spawn" includes the process's start (imports, connections). Stored is
verified, not timed: each batch is written to Cassandra before it is
counted, so its rate is at least the counted one. "Where time went" is the
share of the consuming time spent inside batches
(petitions_tally_batch_seconds: Cassandra, Redis and the threshold check;
the rest is Kafka fetches, decoding and commits) and the CPU cores each
process used (from /proc); a Python process near 1.0 is bound by its one
core. Everything here shares the machine's cores with the whole stack (and
with anything else running), so compare ratios more than absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.processes import ProcessFiles, running_pid
from loadtests.bench_signing import (
    SECRETS,
    SIGNING,
    bench_echo,
    drive,
    echo_service,
    mint_credentials,
    percentiles,
    report,
)
from loadtests.petition_admin import create_petition
from loadtests.population import Population
from petitions.v1 import events_pb2, identity_pb2, signing_pb2, signing_pb2_grpc, tally_pb2, tally_pb2_grpc
from servicekit.dev_processes import ServiceProcess, free_port, run_cli, start_service
from servicekit.settings import REPO_ROOT, CommonSettings
from servicekit.signature_rows import BUCKETS, SIGNATURES_TABLE
from servicekit.stores import CassandraSession, idempotent_producer, redis_client
from services.signing.publisher import signature_key
from services.tally.counters import ShardedCounters
from services.tally.thresholds import ThresholdStore

TALLY = "127.0.0.1:50063"
TALLY_METRICS_PORT = 9163
RUN_DIR = SECRETS.parent
# Processes of `make up` whose CPU use is shown (their pid files are in RUN_DIR).
STACK_PROCESSES = ("kafka", "cassandra", "redis", "signing", "tally")

# The targets the issue names; printed, never enforced.
CATCH_UP_TARGET = 20_000.0  # signatures/s
LATENCY_P99_TARGET = 1.0  # seconds, ack → counted
READS_TARGET = 20_000.0  # GetTally/s

# Sends awaited together while publishing the backlog.
PUBLISH_WINDOW = 5_000
# How often the backlog's progress is read (Redis and the group's offsets).
BACKLOG_POLL_SECONDS = 0.02

# What bench_signing.drive returns: successes, their latencies, failures.
Outcome = tuple[int, list[float], int]
LoadFactory = Callable[[], Coroutine[Any, Any, Outcome]]

say = partial(print, flush=True)


# --- made-up signers (loadtests/population.py) --------------------------------


def accepted_event(petition: str, signer: str, country: str, territory: str, signed_at: Timestamp) -> bytes:
    """A SignatureEvent shaped like the ones signing publishes (no
    idempotency key, as bench_signing's calls carry none)."""
    return events_pb2.SignatureEvent(
        accepted=events_pb2.SignatureAccepted(
            signature_id=uuid.uuid4().hex,
            petition_id=petition,
            signer=signer,
            method=identity_pb2.VERIFICATION_METHOD_OIDC,
            country=country,
            territory=territory,
            signed_at=signed_at,
            ip_hash=secrets.token_hex(16),
        )
    ).SerializeToString()


@dataclass(frozen=True)
class Backlog:
    seconds: float
    partitions: list[int]
    with_territory: int


async def publish_backlog(settings: CommonSettings, petition: str, messages: int, seed: int) -> Backlog:
    """Publishes `messages` accepted signatures of distinct people with the
    services' idempotent producer, keyed as signing keys them."""
    population = Population(seed)
    producer = idempotent_producer(settings, linger_ms=20)
    await producer.start()
    try:
        signed_at = Timestamp()
        signed_at.GetCurrentTime()
        with_territory = 0
        acks: list[asyncio.Future[Any]] = []
        began = time.perf_counter()
        for _ in range(messages):
            signer = secrets.token_hex(32)  # the shape of identity's HMAC pseudonym
            country, territory = population.place()
            with_territory += bool(territory)
            value = accepted_event(petition, signer, country, territory, signed_at)
            acks.append(await producer.send(settings.signatures_topic, value, key=signature_key(petition, signer)))
            if len(acks) >= PUBLISH_WINDOW:
                await asyncio.gather(*acks)
                acks.clear()
        await asyncio.gather(*acks)
        seconds = time.perf_counter() - began
        partitions = sorted(await producer.partitions_for(settings.signatures_topic))
    finally:
        await producer.stop()
    return Backlog(seconds, partitions, with_territory)


async def end_offsets(settings: CommonSettings, partitions: Sequence[int]) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        topic = settings.signatures_topic
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


# --- where time goes -------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces; the fields after it are fixed
    # (utime and stime are fields 14 and 15).
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time spent not idle, summed over every core."""
    # user nice system idle iowait irq softirq steal
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    at: float
    processes: dict[str, float]
    machine: float


def sample_cpu(pids: dict[str, int]) -> CpuSample:
    seconds = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return CpuSample(
        time.perf_counter(), {name: s for name, s in seconds.items() if s is not None}, machine_busy_seconds()
    )


def cores_used(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Cores each process kept busy between two samples, and the machine's."""
    wall = max(after.at - before.at, 1e-9)
    used = {
        name: (after.processes[name] - seconds) / wall
        for name, seconds in before.processes.items()
        if name in after.processes
    }
    used["machine"] = (after.machine - before.machine) / wall
    return used


def stack_pids() -> dict[str, int]:
    """The running system's processes, from `make up`'s pid files."""
    pids = {name: running_pid(ProcessFiles.under(RUN_DIR, name)) for name in STACK_PROCESSES}
    return {name: pid for name, pid in pids.items() if pid is not None}


def describe_cores(used: dict[str, float]) -> str:
    processes = {name: cores for name, cores in used.items() if name != "machine"}
    machine = used.get("machine", 0.0)
    parts = [f"{name} {cores:.2f}" for name, cores in sorted(processes.items(), key=lambda i: -i[1])]
    # /proc/stat and the processes' own counters are not read at one instant,
    # so the remainder can come out slightly negative.
    others = max(0.0, machine - sum(processes.values()))
    return f"{', '.join(parts)}, everything else {others:.2f}; machine {machine:.2f} of {os.cpu_count()}"


@dataclass(frozen=True)
class Timing:
    """A histogram's count and sum, as a service exposes it."""

    count: float
    seconds: float

    def since(self, earlier: Timing) -> Timing:
        return Timing(self.count - earlier.count, self.seconds - earlier.seconds)

    @property
    def mean(self) -> float:
        return self.seconds / self.count if self.count else 0.0


@dataclass(frozen=True)
class TallyTimings:
    """What a tally's metrics say about where its time goes."""

    batches: Timing  # petitions_tally_batch_seconds: applying one partition's batch
    get_tally: Timing  # petitions_rpc_latency_seconds{method="GetTally"}: handling one GetTally

    def since(self, earlier: TallyTimings) -> TallyTimings:
        return TallyTimings(self.batches.since(earlier.batches), self.get_tally.since(earlier.get_tally))


async def tally_timings(metrics_port: int) -> TallyTimings | None:
    """Read from a tally's metrics endpoint; None when unreachable."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    values: dict[tuple[str, str], float] = {
        (sample.name, sample.labels.get("method", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "le" not in sample.labels
    }

    def timing(name: str, method: str = "") -> Timing:
        return Timing(values.get((f"{name}_count", method), 0.0), values.get((f"{name}_sum", method), 0.0))

    return TallyTimings(
        timing("petitions_tally_batch_seconds"), timing("petitions_rpc_latency_seconds", method="GetTally")
    )


# --- part 1: backlog catch-up -----------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the tally's spawn
    counted: int
    cpu: CpuSample


@dataclass
class Progress:
    """What the backlog watcher saw."""

    samples: list[Sample] = field(default_factory=list)
    counted_at: float = 0.0
    committed_at: float = 0.0

    def counted_by(self, at: float) -> int:
        return max((s.counted for s in self.samples if s.at <= at), default=0)

    def consuming(self) -> tuple[Sample, Sample]:
        """From the last poll that saw nothing counted to the first that saw
        everything counted."""
        end = next(s for s in self.samples if s.at >= self.counted_at)
        start = next((s for s in reversed(self.samples) if not s.counted), self.samples[0])
        return start, end


async def wait_until_serving(tally: ServiceProcess, address: str, began: float, give_up_after: float) -> float:
    """Seconds from `began` until the tally's gRPC health first says SERVING.

    Like tests.harness.wait_serving, but timed: polled every 10 ms on a
    channel that reconnects as often, where the default reconnect backoff
    (1 s and growing) would see SERVING up to seconds late."""
    backoff = [
        ("grpc.initial_reconnect_backoff_ms", 10),
        ("grpc.min_reconnect_backoff_ms", 10),
        ("grpc.max_reconnect_backoff_ms", 10),
    ]
    async with grpc.aio.insecure_channel(address, options=backoff) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.perf_counter() - began < give_up_after:
            if tally.process.poll() is not None:
                raise RuntimeError(f"bench tally exited with {tally.process.returncode}:\n{tally.log_tail()}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            except grpc.aio.AioRpcError:
                pass  # not listening yet
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - began
            await asyncio.sleep(0.01)
    raise RuntimeError(f"bench tally not serving on {address} after {give_up_after:g} s:\n{tally.log_tail()}")


async def watch_backlog(
    counters: ShardedCounters,
    admin: AIOKafkaAdminClient,
    group: str,
    topic: str,
    ends: dict[int, int],
    tally: ServiceProcess,
    pids: dict[str, int],
    began: float,
    give_up_after: float,
) -> Progress:
    """Polls applied and committed offsets until both reach the end offsets."""
    coordinator = await admin.find_coordinator(group)
    partitions = sorted(ends)
    topic_partitions = [TopicPartition(topic, p) for p in partitions]
    goal = sum(ends.values())
    progress = Progress()
    counted_done = committed_done = False
    next_report = 1.0
    while not (counted_done and committed_done):
        if tally.process.poll() is not None:
            raise RuntimeError(f"bench tally exited with {tally.process.returncode}:\n{tally.log_tail()}")
        applied = await counters.applied_offsets(partitions)
        offsets = await admin.list_consumer_group_offsets(group, coordinator, topic_partitions)
        cpu = sample_cpu(pids)
        at = cpu.at - began
        committed = {tp.partition: max(0, int(o.offset)) for tp, o in offsets.items()}
        counted = sum(applied[p] + 1 for p in partitions)  # a new topic starts at offset 0
        progress.samples.append(Sample(at, counted, cpu))
        if not counted_done and all(applied[p] >= ends[p] - 1 for p in partitions):
            counted_done, progress.counted_at = True, at
        if not committed_done and all(committed.get(p, 0) >= ends[p] for p in partitions):
            committed_done, progress.committed_at = True, at
        if at >= next_report:
            say(f"  +{at:5.1f} s  counted {counted:>9,}  committed {sum(committed.values()):>9,}  of {goal:,}")
            next_report += 1.0
        if at > give_up_after:
            raise RuntimeError(f"backlog not drained after {give_up_after:g} s: counted {counted:,} of {goal:,}")
        await asyncio.sleep(BACKLOG_POLL_SECONDS)
    return progress


async def refuse_if_thresholds_unpublished(cassandra: CassandraSession) -> None:
    """A tally publishes every unpublished threshold crossing of its keyspace
    at start, to *its* petition-events topic, and marks it published: a
    bench tally would take such an event away from the running system."""
    store = ThresholdStore.prepared(cassandra)
    pending = await store.unpublished()
    if pending:
        names = ", ".join(f"{c.petition_id}/{c.threshold_id}" for c in pending[:5])
        raise RuntimeError(
            f"{len(pending)} threshold crossings await publication ({names}); a bench tally would publish them"
            " to its own topic. Let the running tally publish them (restart it), then run again."
        )


async def delete_topics(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    await admin.delete_topics(topics)
    say(f"cleanup: deleted topics {', '.join(topics)}")


async def delete_shard_keys(redis: aioredis.Redis, topic: str) -> None:
    """Every key of the bench topic's shards: tally:{<topic>:<partition>}:…"""
    keys = [key async for key in redis.scan_iter(match=f"tally:{{{topic}:*", count=1000)]
    for start in range(0, len(keys), 500):
        await redis.unlink(*keys[start : start + 500])
    say(f"cleanup: deleted {len(keys)} Redis keys tally:{{{topic}:*}}")


async def delete_signature_rows(cassandra: CassandraSession, petition: str, shards: int) -> None:
    """The petition's rows in the system of record (one Cassandra partition
    per shard and bucket; one request per shard names its buckets). The
    catalogue entry stays, as bench_signing's do."""
    delete = cassandra.prepare(
        f"DELETE FROM {cassandra.table(SIGNATURES_TABLE)} WHERE petition_id = ? AND shard = ? AND bucket IN ?"
    )
    await asyncio.gather(*(cassandra.execute(delete, (petition, shard, BUCKETS)) for shard in range(shards)))
    say(f"cleanup: deleted the signature rows of {petition}")


async def count_rows(cassandra: CassandraSession, petition: str, shards: Sequence[int]) -> int:
    count = cassandra.prepare(
        f"SELECT count(*) FROM {cassandra.table(SIGNATURES_TABLE)} WHERE petition_id = ? AND shard = ? AND bucket IN ?"
    )
    counts = await asyncio.gather(*(cassandra.execute(count, (petition, shard, BUCKETS)) for shard in shards))
    return sum(int(rows[0][0]) for rows in counts)


@dataclass(frozen=True)
class BacklogResult:
    messages: int
    publish_seconds: float
    # Seconds after the tally's spawn:
    serving_at: float
    consuming_from: float
    counted_at: float
    committed_at: float
    counted_at_serving: int
    tally_total: int
    territory_sum: int
    country_sum: int
    with_territory: int
    stored: int
    batches: Timing | None
    cores: dict[str, float]

    def _rate(self, until: float, since: float, already: int = 0) -> float | None:
        return (self.messages - already) / (until - since) if until > since else None

    @property
    def consuming_rate(self) -> float | None:
        return self._rate(self.counted_at, self.consuming_from)

    @property
    def counted_rate(self) -> float | None:
        """From SERVING; what was counted before SERVING is left out."""
        return self._rate(self.counted_at, self.serving_at, self.counted_at_serving)

    @property
    def consumed_rate(self) -> float | None:
        return self._rate(self.committed_at, self.serving_at, self.counted_at_serving)

    @property
    def total_rate(self) -> float:
        return self.messages / self.committed_at


async def backlog_phase(stack: CommonSettings, messages: int, seed: int, give_up_after: float) -> BacklogResult:
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    bench = stack.model_copy(update={"topic_prefix": prefix})
    group = f"{prefix}tally"
    env = {**os.environ, "PETITIONS_TOPIC_PREFIX": prefix}
    say(f"== backlog: {messages:,} signatures on topic {bench.signatures_topic}, group {group}")
    async with contextlib.AsyncExitStack() as cleanup:
        cassandra = CassandraSession(stack)
        await cassandra.start()
        cleanup.push_async_callback(cassandra.stop)
        redis = redis_client(stack)
        cleanup.push_async_callback(redis.aclose)
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        cleanup.push_async_callback(admin.close)
        await refuse_if_thresholds_unpublished(cassandra)

        migrated = await asyncio.to_thread(run_cli, env, "migrate")
        bench_topics = [bench.signatures_topic, bench.petition_events_topic, bench.dead_letter_topic]
        cleanup.push_async_callback(delete_topics, admin, bench_topics)
        if migrated.returncode != 0:
            raise RuntimeError(f"petitions migrate failed:\n{migrated.stdout}{migrated.stderr}")
        cleanup.push_async_callback(delete_shard_keys, redis, bench.signatures_topic)
        petition = await asyncio.to_thread(create_petition)
        cleanup.push_async_callback(delete_signature_rows, cassandra, petition, bench.signature_partitions)

        backlog = await publish_backlog(bench, petition, messages, seed)
        ends = await end_offsets(bench, backlog.partitions)
        say(
            f"published {messages:,} on petition {petition} in {backlog.seconds:.1f} s"
            f" ({messages / backlog.seconds:,.0f}/s); end offsets {ends}"
        )

        address = f"127.0.0.1:{free_port()}"
        metrics_port = free_port()
        log_dir = Path(tempfile.mkdtemp(prefix="bench-tally-"))
        pids = {**stack_pids(), "bench client": os.getpid()}
        began = time.perf_counter()
        tally = start_service(
            "bench-tally",
            "services.tally",
            [],
            env,
            {
                "PETITIONS_CONSUMER_GROUP": group,
                "PETITIONS_GRPC_ADDRESS": address,
                "PETITIONS_METRICS_PORT": str(metrics_port),
            },
            log_dir,
        )
        cleanup.push_async_callback(asyncio.to_thread, tally.stop)
        pids["bench tally"] = tally.process.pid
        say(f"started bench tally (pid {tally.process.pid}, {address}, log {tally.log_path})")
        counters = ShardedCounters(redis, bench.signatures_topic)
        startup = asyncio.create_task(wait_until_serving(tally, address, began, give_up_after))
        progress = await watch_backlog(
            counters, admin, group, bench.signatures_topic, ends, tally, pids, began, give_up_after
        )
        serving_at = await startup
        consuming_from, consumed_until = progress.consuming()

        async with grpc.aio.insecure_channel(address) as channel:
            reply = await tally_pb2_grpc.TallyStub(channel).GetTally(
                tally_pb2.GetTallyRequest(petition_id=petition), timeout=10
            )
        stored = await count_rows(cassandra, petition, backlog.partitions)
        timings = await tally_timings(metrics_port)
        return BacklogResult(
            messages=messages,
            publish_seconds=backlog.seconds,
            serving_at=serving_at,
            consuming_from=consuming_from.at,
            counted_at=progress.counted_at,
            committed_at=progress.committed_at,
            counted_at_serving=progress.counted_by(serving_at),
            tally_total=reply.total,
            territory_sum=sum(reply.by_territory.values()),
            country_sum=sum(reply.by_country.values()),
            with_territory=backlog.with_territory,
            stored=stored,
            batches=timings.batches if timings else None,
            cores=cores_used(consuming_from.cpu, consumed_until.cpu),
        )
    raise AssertionError("unreachable: the exit stack swallows no exception")


def print_backlog(result: BacklogResult) -> None:
    n = result.messages
    say(
        f"after spawn: SERVING at {result.serving_at:.2f} s ({result.counted_at_serving:,} already counted);"
        f" consuming from {result.consuming_from:.2f} s; all counted at {result.counted_at:.2f} s,"
        f" all committed at {result.committed_at:.2f} s"
    )
    say(
        f"rates: while consuming {optional_rate(result.consuming_rate)}; from SERVING counted"
        f" {optional_rate(result.counted_rate)}, consumed {optional_rate(result.consumed_rate)};"
        f" from spawn {per_second(result.total_rate)}"
    )
    checks = [
        ("GetTally total", result.tally_total, n),
        ("Σ by_country", result.country_sum, n),
        ("Σ by_territory", result.territory_sum, result.with_territory),
        ("rows in Cassandra", result.stored, n),
    ]
    for name, got, expected in checks:
        say(f"{name}: {got:,} {'= expected' if got == expected else f'!= expected {expected:,}  <-- MISMATCH'}")
    consuming = result.counted_at - result.consuming_from
    if result.batches and result.batches.count:
        b = result.batches
        say(
            f"where time went: {b.count:.0f} batches of {n / b.count:,.0f} messages on average,"
            f" {b.mean * 1000:.1f} ms each; {b.seconds:.2f} s summed over batches ="
            f" {b.seconds / consuming:.2f} x the {consuming:.2f} s spent consuming (above 1 when"
            " partitions are applied concurrently; the rest of 1 is fetching, decoding, committing)"
        )
    say(f"CPU cores while consuming: {describe_cores(result.cores)}")


# --- parts 2 and 3: live load ----------------------------------------------------


@dataclass
class Receipts:
    """Accepted receipts not yet seen counted (per partition, lowest offset
    first) and the ack → counted latencies of those seen."""

    pending: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def add(self, partition: int, offset: int, acked: float) -> None:
        heapq.heappush(self.pending.setdefault(partition, []), (offset, acked))

    def partitions(self) -> list[int]:
        return sorted(p for p, waiting in self.pending.items() if waiting)

    def settle(self, applied: dict[int, int], now: float) -> None:
        for partition, waiting in self.pending.items():
            while waiting and waiting[0][0] <= applied.get(partition, -1):
                _, acked = heapq.heappop(waiting)
                self.latencies.append(now - acked)

    @property
    def waiting(self) -> int:
        return sum(len(waiting) for waiting in self.pending.values())


@dataclass
class SignOutcomes:
    accepted: int = 0
    already_signed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)


async def sign_steadily(
    stub: signing_pb2_grpc.SigningAsyncStub,
    credentials: list[str],
    petition: str,
    rate: float,
    seconds: float,
    receipts: Receipts,
    outcomes: SignOutcomes,
) -> None:
    """Open loop: call i starts at i/rate whatever earlier calls are doing,
    so a slow service shows as latency, not as a lower offered rate."""

    async def sign(i: int) -> None:
        sent = time.perf_counter()
        try:
            reply = await stub.Sign(
                signing_pb2.SignRequest(credential=credentials[i], petition_id=petition), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            outcomes.errors[error.code().name] += 1
            return
        acked = time.perf_counter()
        if reply.outcome != signing_pb2.SignResponse.OUTCOME_ACCEPTED:
            outcomes.already_signed += 1
            return
        outcomes.accepted += 1
        outcomes.latencies.append(acked - sent)
        outcomes.topics.add(reply.position.topic)
        receipts.add(reply.position.partition, reply.position.offset, acked)

    began = time.perf_counter()
    calls: list[asyncio.Task[None]] = []
    for i in range(len(credentials)):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        calls.append(asyncio.create_task(sign(i)))
    await asyncio.gather(*calls)


async def watch_counted(
    counters: ShardedCounters, receipts: Receipts, sending: asyncio.Task[None], interval: float, drain: float
) -> None:
    """Polls the running tally's applied offsets until every receipt is seen
    counted, or `drain` seconds after the last Sign answered."""
    gave_up_at: float | None = None
    while True:
        partitions = receipts.partitions()
        if partitions:
            applied = await counters.applied_offsets(partitions)
            receipts.settle(applied, time.perf_counter())
        if sending.done():
            if not receipts.waiting:
                return
            gave_up_at = gave_up_at or time.perf_counter() + drain
            if time.perf_counter() > gave_up_at:
                return
        await asyncio.sleep(interval)


def run_load(load: LoadFactory, ready: Event, go: Event, results: Connection) -> None:
    """A load process's body: say it is ready, wait for go, run, send the outcome."""
    ready.set()
    go.wait()
    results.send(asyncio.run(load()))
    results.close()


class ChildLoad:
    """A load generator in its own (spawned) process: it competes with the
    system for the cores, but not with this process's event loop, whose
    timestamps the latency figures depend on."""

    def __init__(self, load: LoadFactory):
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        self.go = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=run_load, args=(load, ready, self.go, sender), daemon=True)
        self._process.start()
        sender.close()
        if not ready.wait(60):
            self._process.terminate()
            raise RuntimeError("the load process did not start within 60 s")

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    def result(self) -> Outcome:
        try:
            outcome: Outcome = self._results.recv()
        except EOFError:
            raise RuntimeError(f"the load process died (exit code {self._process.exitcode})") from None
        self._process.join(10)
        return outcome

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)


async def get_tally_load(address: str, petition: str, seconds: float, concurrency: int) -> Outcome:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = tally_pb2_grpc.TallyStub(channel)
        request = tally_pb2.GetTallyRequest(petition_id=petition)

        async def read(i: int) -> bool:
            try:
                await stub.GetTally(request, timeout=30)
            except grpc.aio.AioRpcError:
                return False
            return True

        return await drive(read, seconds, concurrency)


@dataclass(frozen=True)
class LiveResult:
    seconds: float
    rate: float
    signs: SignOutcomes
    ack_to_counted: list[float]
    uncounted: int
    tally_total: int
    tally_bytes: bytes
    reads: Outcome | None
    timings: TallyTimings | None
    cores: dict[str, float]


async def live_phase(
    stack: CommonSettings,
    tally_address: str,
    metrics_port: int,
    petition: str,
    credentials: list[str],
    rate: float,
    seconds: float,
    poll: float,
    drain: float,
    reads: ChildLoad | None,
) -> LiveResult:
    redis = redis_client(stack)
    counters = ShardedCounters(redis, stack.signatures_topic)
    pids = {**stack_pids(), "bench client": os.getpid()}
    if reads:
        pids["bench reads"] = reads.pid
    receipts = Receipts()
    signs = SignOutcomes()
    try:
        async with grpc.aio.insecure_channel(SIGNING) as channel:
            stub = signing_pb2_grpc.SigningStub(channel)
            await channel.channel_ready()
            timings_before = await tally_timings(metrics_port)
            cpu_before = sample_cpu(pids)
            if reads:
                reads.go.set()
            sending = asyncio.create_task(sign_steadily(stub, credentials, petition, rate, seconds, receipts, signs))
            watching = asyncio.create_task(watch_counted(counters, receipts, sending, poll, drain))
            await sending
            cpu_after = sample_cpu(pids)
            timings_after = await tally_timings(metrics_port)
            await watching
        read_outcome = await asyncio.to_thread(reads.result) if reads else None
        async with grpc.aio.insecure_channel(tally_address) as channel:
            tally = await tally_pb2_grpc.TallyStub(channel).GetTally(
                tally_pb2.GetTallyRequest(petition_id=petition), timeout=10
            )
    finally:
        await redis.aclose()
    return LiveResult(
        seconds=seconds,
        rate=rate,
        signs=signs,
        ack_to_counted=receipts.latencies,
        uncounted=receipts.waiting,
        tally_total=tally.total,
        tally_bytes=tally.SerializeToString(),
        reads=read_outcome,
        timings=timings_after.since(timings_before) if timings_after and timings_before else None,
        cores=cores_used(cpu_before, cpu_after),
    )


def print_live(result: LiveResult, topic: str, concurrency: int) -> None:
    signs = result.signs
    report("Sign", signs.accepted, signs.latencies, sum(signs.errors.values()), result.seconds)
    if signs.already_signed or signs.errors:
        say(f"  not accepted: {signs.already_signed} ALREADY_SIGNED, errors {dict(signs.errors)}")
    if signs.topics - {topic}:
        say(f"  receipts name topics {sorted(signs.topics)}, but the poller reads {topic}'s shards")
    cuts = percentiles(result.ack_to_counted)
    worst = max(result.ack_to_counted, default=0.0)
    say(
        f"ack→counted: {len(result.ack_to_counted):,} receipts, p50 {cuts[49] * 1000:.1f} ms,"
        f" p99 {cuts[98] * 1000:.1f} ms, max {worst * 1000:.1f} ms; not seen counted: {result.uncounted}"
    )
    say(
        f"GetTally total at the end: {result.tally_total:,}"
        f" ({'= accepted' if result.tally_total == signs.accepted else f'accepted {signs.accepted:,}  <-- MISMATCH'})"
    )
    if result.reads:
        report("GetTally", *result.reads, result.seconds)
        say(f"  ({concurrency} loops in a separate process, during the signing load)")
    if result.timings:
        batches, reads = result.timings.batches, result.timings.get_tally
        say(
            f"running tally: {batches.count:.0f} batches of {signs.accepted / max(batches.count, 1):.1f} signatures"
            f" on average, {batches.mean * 1000:.1f} ms each"
            + (f"; GetTally handled in {reads.mean * 1000:.1f} ms on average" if reads.count else "")
        )
    say(f"CPU cores during the window: {describe_cores(result.cores)}")


def echo_ceiling(seconds: float, concurrency: int, payload: bytes) -> Outcome:
    """The same read loops against bench_signing's bare echo service."""
    with echo_service(free_port()) as port:
        load = ChildLoad(partial(bench_echo, seconds, concurrency, port, payload))
        load.go.set()
        return load.result()


# --- the table -----------------------------------------------------------------


Row = tuple[str, str, str, str]  # figure, measured, target, measured / target


def per_second(value: float) -> str:
    return f"{value:,.0f}/s"


def millis(value: float) -> str:
    return f"{value * 1000:,.1f} ms"


def optional_rate(rate: float | None) -> str:
    return "n/a (done before SERVING)" if rate is None else per_second(rate)


def rate_row(figure: str, rate: float | None, target: float) -> Row:
    ratio = "" if rate is None else f"{rate / target:.2f}"
    return (figure, optional_rate(rate), f"≥ {per_second(target)}", ratio)


def backlog_rows(backlog: BacklogResult) -> list[Row]:
    n = backlog.messages
    return [
        rate_row("backlog: counted, while consuming", backlog.consuming_rate, CATCH_UP_TARGET),
        rate_row("backlog: counted, from SERVING", backlog.counted_rate, CATCH_UP_TARGET),
        rate_row("backlog: consumed (committed), from SERVING", backlog.consumed_rate, CATCH_UP_TARGET),
        rate_row("backlog: committed, from spawn", backlog.total_rate, CATCH_UP_TARGET),
        ("backlog: stored (rows in Cassandra)", f"{backlog.stored:,} of {n:,}", "all", "rate ≥ counted"),
        ("backlog: GetTally total", f"{backlog.tally_total:,} of {n:,}", "all", ""),
    ]


def live_rows(live: LiveResult, echo: Outcome | None, concurrency: int) -> list[Row]:
    cuts = percentiles(live.ack_to_counted)
    p99 = cuts[98]
    rows: list[Row] = [
        (f"live: Sign accepted ({live.rate:g}/s offered)", per_second(live.signs.accepted / live.seconds), "", ""),
        ("live: ack→counted p50", millis(cuts[49]), "", ""),
        ("live: ack→counted p99", millis(p99), f"< {millis(LATENCY_P99_TARGET)}", f"{p99 / LATENCY_P99_TARGET:.2f}"),
        ("live: ack→counted max", millis(max(live.ack_to_counted, default=0.0)), "", ""),
        ("live: receipts never seen counted", f"{live.uncounted}", "0", ""),
    ]
    if live.reads is None:
        return rows
    done, latencies, failures = live.reads
    reads_rate = done / live.seconds
    read_cuts = percentiles(latencies)
    rows += [
        rate_row(f"GetTally reads ({concurrency} loops, under load)", reads_rate, READS_TARGET),
        ("GetTally p50 / p99", f"{millis(read_cuts[49])} / {millis(read_cuts[98])}", "", ""),
        ("GetTally failures", f"{failures}", "0", ""),
    ]
    if live.timings:
        rows.append(("GetTally handling time, server mean", millis(live.timings.get_tally.mean), "", ""))
    if echo is not None:
        echo_rate = echo[0] / live.seconds
        echo_cuts = percentiles(echo[1])
        rows += [
            (f"echo calls ({concurrency} loops, same tool)", per_second(echo_rate), "", ""),
            ("echo p50 / p99", f"{millis(echo_cuts[49])} / {millis(echo_cuts[98])}", "", ""),
            ("GetTally / echo", f"{reads_rate / echo_rate:.2f}", "", ""),
        ]
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("figure", "measured", "target", "measured/target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    say()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# --- main ------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured, and whether the services' code differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "status", "--porcelain", "services", "servicekit"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    edits = len(changed.stdout.splitlines())
    return f"{head.stdout.strip() or 'unknown'}" + (
        f" with {edits} uncommitted changes under services/ and servicekit/" if edits else ""
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="backlog size; 0 skips it (default 100000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="live window; 0 skips it (default 15)")
    parser.add_argument("--rate", type=float, default=200.0, help="Sign calls per second offered (default 200)")
    parser.add_argument(
        "--read-concurrency", type=int, default=64, help="GetTally loops in flight; 0 skips reads (default 64)"
    )
    parser.add_argument("--poll-ms", type=float, default=2.0, help="applied-offset poll interval (default 2)")
    parser.add_argument(
        "--drain-seconds", type=float, default=30.0, help="wait for the last receipts to be counted (default 30)"
    )
    parser.add_argument(
        "--catch-up-timeout", type=float, default=300.0, help="give up on the backlog after this (default 300)"
    )
    parser.add_argument("--tally", default=TALLY, help=f"running tally's gRPC address (default {TALLY})")
    parser.add_argument(
        "--tally-metrics-port",
        type=int,
        default=TALLY_METRICS_PORT,
        help=f"running tally's metrics port (default {TALLY_METRICS_PORT})",
    )
    parser.add_argument("--seed", type=int, default=1, help="where the backlog's signers live (default 1)")
    options = parser.parse_args()
    if not (SECRETS / "ip-hash.key").exists():
        say("run `make up` first", file=sys.stderr)
        return 1

    began = time.perf_counter()
    say(f"code: {code_version()}")
    stack = CommonSettings()
    backlog = live = echo = None
    if options.messages > 0:
        backlog = asyncio.run(backlog_phase(stack, options.messages, options.seed, options.catch_up_timeout))
        print_backlog(backlog)

    if options.seconds > 0:
        say(f"== live: {options.rate:g} Sign/s for {options.seconds:g} s, {options.read_concurrency} GetTally loops")
        credentials = mint_credentials(int(options.rate * options.seconds))
        petition = create_petition()
        reads = None
        if options.read_concurrency > 0:
            reads = ChildLoad(
                partial(get_tally_load, options.tally, petition, options.seconds, options.read_concurrency)
            )
        try:
            live = asyncio.run(
                live_phase(
                    stack,
                    options.tally,
                    options.tally_metrics_port,
                    petition,
                    credentials,
                    options.rate,
                    options.seconds,
                    options.poll_ms / 1000,
                    options.drain_seconds,
                    reads,
                )
            )
        finally:
            if reads:
                reads.stop()
        say(f"petition {petition}")
        print_live(live, stack.signatures_topic, options.read_concurrency)
        if live.reads:
            echo = echo_ceiling(options.seconds, options.read_concurrency, live.tally_bytes)
            report("echo", *echo, options.seconds)

    print_table(
        (backlog_rows(backlog) if backlog else []) + (live_rows(live, echo, options.read_concurrency) if live else [])
    )
    say(f"\nruntime {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
