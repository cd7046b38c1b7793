"""Tally workers a test runs itself, on a signature log of its own.

A test that kills, stops or floods tally must not do it to the session's
tally. It starts its own `python -m services.tally` processes on a topic
prefix and consumer group of their own (keyspace and Redis database stay the
session's; the session's petition states are copied to the prefix's
petition-state topic before each worker starts, so its view knows the
petitions the test made), publishes signature events straight to that log
as signing would, and keeps its own account of what those events must count
to.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import events_pb2, identity_pb2, tally_pb2, tally_pb2_grpc
from servicekit.settings import CommonSettings
from servicekit.stores import idempotent_producer
from services.signing.publisher import signature_key
from services.tally.counters import Totals
from tests.harness import ServiceProcess, free_port, run_cli, start_service, wait_serving
from tests.stored_signatures import DEFAULT_SHARDS, petition_rows
from tests.system import SystemClient, topic_partitions
from tests.waiting import eventually

# A record as it goes on the log: key, value.
Record = tuple[bytes, bytes]

APPLIED_SAMPLES = tuple(
    f'petitions_tally_messages_applied_total{{kind="{kind}"}}' for kind in ("accepted", "invalidated")
)


# What the log must count to


@dataclass
class Signature:
    """A person's standing on one petition: where their first signature said
    they are, and whether it was invalidated since."""

    territory: str
    country: str
    valid: bool = True


class Ledger:
    """Every event a test put on the log, and the counts they must give:
    each person once per petition, where their first signature says, unless
    invalidated (an invalidated person never counts again)."""

    def __init__(self) -> None:
        self._signatures: dict[str, dict[str, Signature]] = {}
        self._signers: dict[str, list[str]] = {}
        self.messages = 0

    def accepted(self, petition_id: str, signer: str, territory: str, country: str) -> Record:
        signatures = self._signatures.setdefault(petition_id, {})
        if signer not in signatures:
            signatures[signer] = Signature(territory, country)
            self._signers.setdefault(petition_id, []).append(signer)
        event = events_pb2.SignatureEvent(
            accepted=events_pb2.SignatureAccepted(
                signature_id=uuid.uuid4().hex,
                petition_id=petition_id,
                signer=signer,
                method=identity_pb2.VERIFICATION_METHOD_OIDC,
                country=country,
                territory=territory,
                signed_at=_now(),
                ip_hash=uuid.uuid4().hex,
            )
        )
        self.messages += 1
        return signature_key(petition_id, signer), event.SerializeToString()

    def invalidated(self, petition_id: str, signer: str) -> Record:
        self._signatures[petition_id][signer].valid = False
        event = events_pb2.SignatureEvent(
            invalidated=events_pb2.SignatureInvalidated(
                petition_id=petition_id, signer=signer, reason="test: fraud", invalidated_at=_now()
            )
        )
        self.messages += 1
        return signature_key(petition_id, signer), event.SerializeToString()

    def signers(self, petition_id: str) -> Sequence[str]:
        """Everyone who signed the petition, invalidated or not, first come first."""
        return self._signers.get(petition_id, [])

    def is_valid(self, petition_id: str, signer: str) -> bool:
        return self._signatures[petition_id][signer].valid

    def distinct_signers(self, petition_id: str) -> int:
        """The most the petition's count can ever have been."""
        return len(self.signers(petition_id))

    def expected(self, petition_id: str) -> Totals:
        valid = [s for s in self._signatures.get(petition_id, {}).values() if s.valid]
        return Totals(
            total=len(valid),
            by_territory=dict(Counter(s.territory for s in valid if s.territory)),
            by_country=dict(Counter(s.country for s in valid if s.country)),
        )


def _now() -> Timestamp:
    now = Timestamp()
    now.GetCurrentTime()
    return now


def new_signer() -> str:
    """A pseudonym shaped like identity's (64 hex digits)."""
    return uuid.uuid4().hex + uuid.uuid4().hex


@dataclass(frozen=True)
class Traffic:
    """The shape of a stream of signature events."""

    territories: Sequence[str]
    countries: Sequence[str]
    # Of all events: a repeat of someone who already signed the petition
    # (perhaps saying another territory; the first one must win), and an
    # invalidation of someone who signed and is still valid.
    duplicate_share: float = 0.08
    invalidation_share: float = 0.04
    # The share of events on the first (hot) petition; the others share the rest.
    hot_share: float = 0.85


def mixed_traffic(
    ledger: Ledger, rng: random.Random, petition_ids: Sequence[str], traffic: Traffic, messages: int
) -> Iterator[Record]:
    """Up to `messages` events over the petitions, most on the first one; the
    ledger records each event as it is generated. A repeat or invalidation
    has the same key as the person's signature, so it lands after it in the
    same partition."""
    hot, others = petition_ids[0], petition_ids[1:]
    for _ in range(messages):
        petition_id = hot if not others or rng.random() < traffic.hot_share else rng.choice(others)
        signers = ledger.signers(petition_id)
        draw = rng.random()
        if signers and draw < traffic.duplicate_share:
            yield ledger.accepted(
                petition_id, rng.choice(signers), rng.choice(traffic.territories), rng.choice(traffic.countries)
            )
            continue
        if signers and draw < traffic.duplicate_share + traffic.invalidation_share:
            signer = rng.choice(signers)
            if ledger.is_valid(petition_id, signer):
                yield ledger.invalidated(petition_id, signer)
                continue
        yield ledger.accepted(petition_id, new_signer(), rng.choice(traffic.territories), rng.choice(traffic.countries))


def repeats(ledger: Ledger, rng: random.Random, petition_ids: Sequence[str], traffic: Traffic) -> Iterator[Record]:
    """A second signature from every person who signed, valid or invalidated,
    saying a random territory and country."""
    for petition_id in petition_ids:
        for signer in list(ledger.signers(petition_id)):
            yield ledger.accepted(petition_id, signer, rng.choice(traffic.territories), rng.choice(traffic.countries))


def totals_of_tally(tally: tally_pb2.PetitionTally) -> Totals:
    return Totals(tally.total, dict(tally.by_territory), dict(tally.by_country))


# Putting events on the log


class LogPublisher:
    """Publishes records to one topic from a thread of its own, with an
    idempotent producer (acks=all; a partition's records stay in order), so
    that the test can kill and start workers meanwhile."""

    def __init__(self, settings: CommonSettings, topic: str):
        self._settings = settings
        self._topic = topic
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-publisher")
        self._future: Future[int] | None = None

    def start(self, records: Iterable[Record], *, chunk: int = 1_000, pause_seconds: float = 0.0) -> None:
        """Publishes records in chunks, each acknowledged before the next,
        with a pause between chunks; until they end or stop() is called."""
        self._future = self._executor.submit(asyncio.run, self._publish(records, chunk, pause_seconds))

    def publish(self, records: Iterable[Record]) -> int:
        """Publishes every record and waits for Kafka's acknowledgements."""
        self.start(records)
        return self.join()

    def stop(self) -> None:
        """Stops after the chunk in flight; records not yet taken are never published."""
        self._stop.set()

    def join(self, timeout: float = 120.0) -> int:
        """Waits for the last start() to end; re-raises its error; returns
        how many records it published."""
        assert self._future is not None, "nothing was published"
        return self._future.result(timeout)

    def close(self) -> None:
        self.stop()
        self._executor.shutdown(wait=True)

    async def _publish(self, records: Iterable[Record], chunk: int, pause_seconds: float) -> int:
        producer = idempotent_producer(self._settings, linger_ms=20)
        await producer.start()
        published = 0
        try:
            pending: list[asyncio.Future[object]] = []
            for key, value in records:
                pending.append(await producer.send(self._topic, value, key=key))
                if len(pending) >= chunk:
                    await asyncio.gather(*pending)
                    published += len(pending)
                    pending = []
                    if self._stop.is_set():
                        break
                    if pause_seconds:
                        # Time is the subject: the pause shapes the flow
                        # (a steady rate), it waits for no state.
                        await asyncio.sleep(pause_seconds)
            await asyncio.gather(*pending)
            return published + len(pending)
        finally:
            await producer.stop()


async def copy_records(bootstrap: str, source: str, target: str, since: dict[int, int]) -> dict[int, int]:
    """Copies the source topic's records from the offsets `since` (by
    partition) to its end onto the target topic, key, value and tombstones
    alike; returns the offsets copied up to."""
    partitions = (await topic_partitions(bootstrap, [source]))[0]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > since.get(tp.partition, 0)}
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, since.get(tp.partition, 0))
        sent: list[asyncio.Future[object]] = []
        while remaining:
            batches = await consumer.getmany(timeout_ms=5000)
            if not batches:
                raise AssertionError(f"could not read {sorted(remaining)} of {source} to the end")
            for tp, records in batches.items():
                sent += [await producer.send(target, r.value, key=r.key) for r in records]
                if records[-1].offset + 1 >= ends[TopicPartition(tp.topic, tp.partition)]:
                    remaining.discard(tp)
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


# Tally processes of the test's own


@dataclass
class TallyWorker:
    """One `python -m services.tally` process."""

    name: str
    service: ServiceProcess
    channel: grpc.Channel
    stub: tally_pb2_grpc.TallyStub = field(init=False)

    def __post_init__(self) -> None:
        self.stub = tally_pb2_grpc.TallyStub(self.channel)

    @property
    def alive(self) -> bool:
        return self.service.process.poll() is None

    def kill(self) -> None:
        """kill -9: no drain, no commit, no goodbye to the consumer group."""
        self.channel.close()
        self.service.process.kill()
        self.service.process.wait()

    def stop(self) -> int:
        """SIGTERM, then the exit code (0 when it drained cleanly)."""
        self.channel.close()
        return self.service.stop()


class PrivateTally:
    """Tally workers of one test on a log of their own: a topic prefix and a
    consumer group inside the session's namespace."""

    def __init__(self, system: SystemClient, name: str, log_dir: Path, **settings: str):
        """settings: more PETITIONS_* variables for every worker."""
        self.system = system
        self.log_dir = log_dir
        self.prefix = f"{system.namespace.topic_prefix}{name}-"
        self.group = f"{self.prefix}tally"
        self.settings = CommonSettings(kafka_bootstrap=system.stack.kafka_bootstrap, topic_prefix=self.prefix)
        if "PETITIONS_SIGNATURE_PARTITIONS" in settings:
            # What migrate() creates the topic with and the workers expect.
            partitions = int(settings["PETITIONS_SIGNATURE_PARTITIONS"])
            self.settings = self.settings.model_copy(update={"signature_partitions": partitions})
        self.env = {
            **system.namespace.env(system.stack),
            "PETITIONS_TOPIC_PREFIX": self.prefix,
            "PETITIONS_CONSUMER_GROUP": self.group,
            "PETITIONS_GRACE_SECONDS": "1",
            **settings,
        }
        self.workers: list[TallyWorker] = []
        # How far the session's petition-state topic has been copied.
        self._shared_up_to: dict[int, int] = {}
        self._own_flushes = 0
        self._flushes_at_start = self._flushes()

    @property
    def signatures_topic(self) -> str:
        return self.settings.signatures_topic

    @property
    def petition_events_topic(self) -> str:
        return self.settings.petition_events_topic

    def migrate(self) -> None:
        """Creates the prefix's topics (and checks the schema)."""
        result = run_cli(self.env, "migrate")
        assert result.returncode == 0, f"petitions migrate failed:\n{result.stdout}\n{result.stderr}"

    def share_petitions(self) -> None:
        """Copies the session's petition states not copied yet to the
        prefix's petition-state topic: tally learns petitions (and their
        thresholds) only from there, and the session's petitions service
        publishes on the session's."""
        self._shared_up_to = asyncio.run(
            copy_records(
                self.settings.kafka_bootstrap,
                f"{self.system.namespace.topic_prefix}petition-state",
                self.settings.petition_state_topic,
                self._shared_up_to,
            )
        )

    def publisher(self) -> LogPublisher:
        return LogPublisher(self.settings, self.signatures_topic)

    def start_worker(self) -> TallyWorker:
        """Starts one more worker in the group, knowing every petition made
        so far, and waits until it serves."""
        self.share_petitions()
        name = f"{self.prefix}tally-{len(self.workers) + 1}"
        ports = self.system.namespace.ports
        ports[name], ports[f"{name}-metrics"] = free_port(), free_port()
        address = self.system.namespace.address(name)
        service = start_service(
            name,
            "services.tally",
            [],
            self.env,
            {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": str(ports[f"{name}-metrics"])},
            self.log_dir,
        )
        worker = TallyWorker(name, service, grpc.insecure_channel(address))
        self.workers.append(worker)
        wait_serving(service, address)
        return worker

    def applied(self, worker: TallyWorker) -> float:
        """Messages this worker process applied (its metrics endpoint)."""
        return sum(self.system.metric_value(worker.name, sample) for sample in APPLIED_SAMPLES)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive:
                worker.stop()

    # reading what the workers did

    def committed(self) -> int:
        """Messages the group has committed, over all partitions."""
        partitions = list(range(self.settings.signature_partitions))
        return sum(self.system.committed_offsets(partitions, topic=self.signatures_topic, group=self.group).values())

    def wait_committed(self, messages: int, timeout: float) -> None:
        """Until the group has committed at least this many messages."""
        eventually(
            lambda: self.committed() >= messages,
            timeout,
            interval=0.2,
            message=f"group {self.group} committing {messages} messages",
        )

    def wait_applied(self, timeout: float = 120.0) -> None:
        """Until the group has committed every message of the log."""
        eventually(
            lambda: self.system.applied_everything(topic=self.signatures_topic, group=self.group),
            timeout,
            interval=0.5,
            message=f"group {self.group} applying {self.signatures_topic} to its end",
        )

    def tally(self, petition_id: str, worker: TallyWorker) -> tally_pb2.PetitionTally:
        """GetTally from a worker, read from the stores after this call."""
        return self.system.fresh_tally(petition_id, tally_stub=worker.stub)

    def recount(self, *args: str) -> tuple[int, str]:
        result = run_cli(self.env, "recount", *args)
        return result.returncode, result.stdout + result.stderr

    def flush_redis(self) -> None:
        """Wipes the session's Redis database (tally's counters, signer sets
        and applied offsets, and signing's ledger)."""
        with self._redis() as client:
            client.flushdb()
        self._own_flushes += 1

    def foreign_flushes(self) -> int:
        """FLUSHDBs Redis ran since this object was made, not by it: another
        test session sharing the Redis database wipes it when it starts and
        ends, which no tally can be expected to survive exactly."""
        return self._flushes() - self._flushes_at_start - self._own_flushes

    def _flushes(self) -> int:
        with self._redis() as client:
            stats: dict[str, dict[str, int]] = client.info("commandstats")
        return int(stats.get("cmdstat_flushdb", {}).get("calls", 0))

    def _redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["PETITIONS_REDIS_URL"])

    def shard_totals(self, petition_id: str) -> dict[int, int]:
        """Each partition's own count of the petition, from its shard in Redis
        (tally:{<topic>:<partition>}:counts:<petition>, field total)."""
        with self._redis() as client:
            return {
                partition: int(
                    client.hget(f"tally:{{{self.signatures_topic}:{partition}}}:counts:{petition_id}", "total") or 0
                )
                for partition in range(self.settings.signature_partitions)
            }

    def announcements(self, petition_id: str) -> list[events_pb2.ThresholdReached]:
        """Every ThresholdReached on the prefix's petition-events topic."""
        events = [
            events_pb2.PetitionEvent.FromString(record.value)
            for record in self.system.records_with_key(petition_id.encode(), topic=self.petition_events_topic)
        ]
        return [event.threshold_reached for event in events if event.WhichOneof("event") == "threshold_reached"]


def stored_totals(system: SystemClient, petition_id: str, shards: int = DEFAULT_SHARDS) -> Totals:
    """The counts the system of record gives: rows of the signatures table
    (every shard and bucket) with a signature and no invalidation."""
    columns = "signature_id, territory, country, invalidated_at"
    rows = [
        row
        for row in petition_rows(system.cassandra, petition_id, columns, shards)
        if row.signature_id is not None and row.invalidated_at is None
    ]
    return Totals(
        total=len(rows),
        by_territory=dict(Counter(row.territory for row in rows if row.territory)),
        by_country=dict(Counter(row.country for row in rows if row.country)),
    )
