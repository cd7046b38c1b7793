"""Invariant 4, audited after the whole suite: no raw identity (subject,
name, email address) that any test used is found in Kafka, Redis or
Cassandra. Runs last (see conftest), when the stores hold everything the
suite wrote.

Each store is read whole: every Redis key and value of the session's
database, every Kafka record (key and value) of every topic under the
session's prefix, every row of every table of the session's keyspace. A
canary planted in each store first proves that the readers really see what
the services wrote there; it must be found, and nothing else may be."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.privacy import find_leaks
from tests.system import SystemClient, topic_partitions

pytestmark = [pytest.mark.stack, pytest.mark.audit]

# Keys read per Redis round trip.
REDIS_BATCH = 1000
CANARY_TABLE = "privacy_audit_canary"


def _chunks(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def redis_contents(system: SystemClient) -> list[bytes]:
    store = redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])
    found: list[bytes] = []
    try:
        keys = list(store.scan_iter(count=REDIS_BATCH))
        for chunk in _chunks(keys, REDIS_BATCH):
            found.extend(chunk)
            types = store.pipeline(transaction=False)
            for key in chunk:
                types.type(key)
            # Read each value by its type (DUMP may LZF-compress strings,
            # which would hide what this looks for), a batch per round trip.
            reads = store.pipeline(transaction=False)
            for key, kind in zip(chunk, types.execute(), strict=True):
                if kind == b"string":
                    reads.get(key)
                elif kind == b"hash":
                    reads.hgetall(key)
                elif kind == b"set":
                    reads.smembers(key)
                elif kind == b"zset":
                    reads.zrange(key, 0, -1)
                elif kind == b"list":
                    reads.lrange(key, 0, -1)
                elif kind == b"stream":
                    reads.xrange(key)
            for value in reads.execute():
                found.extend(_redis_blobs(value))
    finally:
        store.close()
    return found


def _redis_blobs(value: Any) -> Iterator[bytes]:
    if value is None:
        return
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):
        for pair in value.items():
            yield from _redis_blobs(pair[0])
            yield from _redis_blobs(pair[1])
    elif isinstance(value, list | set | tuple):
        for item in value:
            yield from _redis_blobs(item)
    else:
        yield str(value).encode()


async def kafka_contents(system: SystemClient) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=system.stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[bytes] = []
    try:
        topics = [t for t in await consumer.topics() if t.startswith(system.namespace.topic_prefix)]
        partitions = [tp for each in await topic_partitions(system.stack.kafka_bootstrap, topics) for tp in each]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=2000, max_records=10_000)
            if not batches:
                break
            for tp, records in batches.items():
                found.extend((r.key or b"") + b"\x00" + (r.value or b"") for r in records)
                if records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        assert not remaining, f"could not read to the end of {remaining}"
    finally:
        await consumer.stop()
    return found


def cassandra_contents(system: SystemClient) -> list[bytes]:
    tables = [
        row.table_name
        for row in system.cassandra.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (system.namespace.keyspace,)
        )
    ]
    found: list[bytes] = []
    for table in tables:
        statement = system.cassandra.prepare(f"SELECT * FROM {table}")
        statement.fetch_size = 5000
        for row in system.cassandra.execute(statement, timeout=120):
            found.append(repr(tuple(row)).encode())
    return found


async def _plant_kafka(system: SystemClient, topic: str, canary: str) -> None:
    # The broker creates no topic by itself.
    admin = AIOKafkaAdminClient(bootstrap_servers=system.stack.kafka_bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=system.stack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, canary.encode(), key=b"canary")
    finally:
        await producer.stop()


def plant_canaries(system: SystemClient, canary: str) -> None:
    """A marker in each store, where the readers must find it: as written in
    Redis and Cassandra, lower-cased in Kafka (which only the search of the
    lower-case form finds)."""
    store = redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])
    store.hset("privacy-audit:canary", "marker", f"x{canary}x")
    store.close()
    asyncio.run(_plant_kafka(system, f"{system.namespace.topic_prefix}privacy-audit-canary", canary.lower()))
    system.cassandra.execute(f"CREATE TABLE IF NOT EXISTS {CANARY_TABLE} (id text PRIMARY KEY, note text)")
    system.cassandra.execute(f"INSERT INTO {CANARY_TABLE} (id, note) VALUES ('c', %s)", (f"<{canary}>",))


def test_no_raw_identity_reached_any_store(system: SystemClient, capsys: pytest.CaptureFixture[str]) -> None:
    identities = {i for i in system.raw_identities if len(i) >= 6}
    assert len(identities) > 20, "the suite should have used many identities by now"
    # Mixed case, like a name: its lower-case form is a second variant.
    canary = f"Audit-Canary-{uuid.uuid4().hex}"
    plant_canaries(system, canary)
    began = time.monotonic()
    stores = {
        "redis": redis_contents(system),
        "kafka": asyncio.run(kafka_contents(system)),
        "cassandra": cassandra_contents(system),
    }
    read_seconds = time.monotonic() - began
    assert all(stores.values()), f"every store should hold data by now: { {k: len(v) for k, v in stores.items()} }"
    began = time.monotonic()
    found = find_leaks({*identities, canary}, stores)
    search_seconds = time.monotonic() - began
    with capsys.disabled():
        size = sum(len(blob) for blobs in stores.values() for blob in blobs)
        print(
            f"\nprivacy audit: {len(identities)} identities searched in"
            f" {', '.join(f'{len(v):,} {k} blobs' for k, v in stores.items())} ({size / 1e6:.1f} MB);"
            f" read in {read_seconds:.1f} s, searched in {search_seconds:.1f} s"
        )
    canaries = {store for store, identity in found if identity == canary}
    assert canaries == set(stores), f"the planted canary was found in {canaries}"
    leaks = sorted((store, identity) for store, identity in found if identity != canary)
    assert leaks == []
