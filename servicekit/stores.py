"""Connections to Kafka, Redis and Cassandra, made the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy

from servicekit.settings import CommonSettings

log = structlog.get_logger()


# Connections per process; a request that finds them all busy waits up to
# REDIS_POOL_WAIT_SECONDS for one rather than failing at once.
REDIS_MAX_CONNECTIONS = 200
REDIS_POOL_WAIT_SECONDS = 2.0


def redis_client(settings: CommonSettings) -> aioredis.Redis:
    """A pooled asyncio Redis client; bytes in, bytes out. The pool is
    bounded and blocking: a burst queues briefly for a connection instead of
    opening one per request or failing with "too many connections"."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_SECONDS,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)


@contextlib.asynccontextmanager
async def redis_connection(settings: CommonSettings) -> AsyncIterator[aioredis.Redis]:
    """A pooled client (redis_client) that has answered a PING, so a service
    whose Redis is unreachable fails at start rather than on its first
    request. On exit the pool's connections are closed too: a client given a
    pool of its own making leaves it open on aclose() by default."""
    client = redis_client(settings)
    try:
        await client.ping()
        yield client
    finally:
        await client.aclose(close_connection_pool=True)


def idempotent_producer(settings: CommonSettings, *, linger_ms: int = 2) -> AIOKafkaProducer:
    """A producer that never duplicates or reorders a partition's messages on
    retry (enable_idempotence implies acks=all), so an acknowledged send is on
    every in-sync replica."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
    )


# Errors after which an idempotent producer can never send again: aiokafka
# stops its sender for good (a Java producer would bump its epoch instead).
# They follow a broker outage during which sends timed out, leaving gaps in
# the producer's sequence numbers.
_PRODUCER_BROKEN = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)


class ReplaceableProducer:
    """An idempotent producer that replaces itself with a new one (a new
    producer id) when its idempotence state is broken, so that a broker
    outage costs failed sends during the outage, not a dead service after
    it. The sends that failed are the caller's to retry."""

    def __init__(self, settings: CommonSettings, *, linger_ms: int = 2):
        self._settings = settings
        self._linger_ms = linger_ms
        self._producer = idempotent_producer(settings, linger_ms=linger_ms)
        self._started = False
        self._generation = 0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None) -> Any:
        """RecordMetadata once Kafka acknowledged; raises KafkaError."""
        generation = self._generation
        if not self._started:
            await self._replace(generation)
        try:
            return await self._producer.send_and_wait(topic, value, key=key)
        except _PRODUCER_BROKEN:
            await self._replace(generation)
        # The broker refused that send, so it stored nothing: sending it once
        # more, with the new producer, cannot duplicate it.
        return await self._producer.send_and_wait(topic, value, key=key)

    async def _replace(self, generation: int) -> None:
        async with self._lock:
            if generation != self._generation:
                return  # another caller already replaced it
            old, was_started = self._producer, self._started
            self._generation += 1
            self._producer = idempotent_producer(self._settings, linger_ms=self._linger_ms)
            self._started = False
            if was_started:
                with contextlib.suppress(KafkaError):
                    await old.stop()
            log.warning("replacing the Kafka producer", generation=self._generation)
            # If Kafka is still away this raises; the next send tries again.
            await self._producer.start()
            self._started = True


def cassandra_cluster(hosts: Sequence[str], port: int, connect_timeout: float = 10) -> Cluster:
    """A driver Cluster for the given contact points, configured one way everywhere."""
    profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(), request_timeout=30)
    return Cluster(
        list(hosts),
        port=port,
        protocol_version=5,
        connect_timeout=connect_timeout,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )


class CassandraSession:
    """A cassandra-driver session whose queries are awaited from asyncio.

    The driver runs its own I/O thread; each ResponseFuture is bridged to an
    asyncio future on the caller's loop.
    """

    def __init__(self, settings: CommonSettings):
        self._cluster = cassandra_cluster(settings.cassandra_hosts, settings.cassandra_port)
        self.keyspace = settings.keyspace
        self._session: Session | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # No session keyspace: statements name their tables in full, which
        # Cassandra recommends for prepared statements.
        self._session = await loop.run_in_executor(None, self._cluster.connect)

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("CassandraSession.start() was not awaited")
        return self._session

    def table(self, name: str) -> str:
        return f"{self.keyspace}.{name}"

    def prepare(self, cql: str) -> Any:
        return self.session.prepare(cql)

    async def execute(self, statement: Any, parameters: Sequence[Any] | None = None) -> list[Any]:
        """Runs one statement and returns all its rows."""
        future: ResponseFuture = self.session.execute_async(statement, parameters)
        return await _bridge(future)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._cluster.shutdown)


def _bridge(response: ResponseFuture) -> asyncio.Future[list[Any]]:
    loop = asyncio.get_running_loop()
    result: asyncio.Future[list[Any]] = loop.create_future()

    def on_rows(rows: Any) -> None:
        # Schema changes and plain writes complete with None rather than rows.
        collected = list(rows) if rows is not None else []
        if response.has_more_pages:
            response.start_fetching_next_page()
            pending.extend(collected)
            return
        loop.call_soon_threadsafe(_settle, result, [*pending, *collected], None)

    def on_error(error: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, result, None, error)

    pending: list[Any] = []
    response.add_callbacks(on_rows, on_error)
    return result


def _settle(future: asyncio.Future[list[Any]], rows: list[Any] | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(rows or [])


@contextlib.asynccontextmanager
async def cassandra_session(settings: CommonSettings) -> AsyncIterator[CassandraSession]:
    """A started session, shut down on exit."""
    session = CassandraSession(settings)
    await session.start()
    try:
        yield session
    finally:
        await session.stop()


@contextlib.asynccontextmanager
async def kafka_producer(settings: CommonSettings, *, linger_ms: int = 2) -> AsyncIterator[ReplaceableProducer]:
    """A started idempotent producer, flushed and stopped on exit."""
    producer = ReplaceableProducer(settings, linger_ms=linger_ms)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()
