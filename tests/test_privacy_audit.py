"""Invariant 4, audited after the whole suite: no raw identity (subject,
name, email address) that any test used is found in Kafka, Redis or
Cassandra. Runs last (see conftest), when the stores hold everything the
suite wrote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer

from tests.system import SystemClient, topic_partitions

pytestmark = [pytest.mark.stack, pytest.mark.audit]


def redis_contents(system: SystemClient) -> list[bytes]:
    store = redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])
    found: list[bytes] = []
    for key in store.scan_iter(count=1000):
        found.append(key)
        # Read each value by its type (DUMP may LZF-compress strings, which
        # would hide what this looks for).
        kind = store.type(key)
        values: list[Any] = []
        if kind == b"string":
            values = [store.get(key)]
        elif kind == b"hash":
            values = [item for pair in store.hgetall(key).items() for item in pair]
        elif kind == b"set":
            values = list(store.smembers(key))
        elif kind == b"zset":
            values = list(store.zrange(key, 0, -1))
        elif kind == b"list":
            values = list(store.lrange(key, 0, -1))
        found.extend(v if isinstance(v, bytes) else str(v).encode() for v in values)
    store.close()
    return found


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
            batches = await consumer.getmany(timeout_ms=2000)
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
    found: list[bytes] = []
    for table in ("signatures", "petitions"):
        for row in system.cassandra.execute(f"SELECT * FROM {table}"):
            found.append(repr(tuple(row)).encode())
    return found


def test_no_raw_identity_reached_any_store(system: SystemClient) -> None:
    identities = {i for i in system.raw_identities if len(i) >= 6}
    assert len(identities) > 20, "the suite should have used many identities by now"
    stores = {
        "redis": redis_contents(system),
        "kafka": asyncio.run(kafka_contents(system)),
        "cassandra": cassandra_contents(system),
    }
    assert all(stores.values()), f"every store should hold data by now: { {k: len(v) for k, v in stores.items()} }"
    leaks = [
        (store, identity)
        for store, blobs in stores.items()
        for identity in identities
        for variant in {identity, identity.lower()}
        if any(variant.encode() in blob for blob in blobs)
    ]
    assert leaks == []
