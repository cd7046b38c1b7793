"""Connections to Kafka, Redis and Cassandra, made the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis.asyncio as aioredis
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    SaslAuthenticationFailed,
    UnknownProducerId,
)
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from redis import exceptions as redis_errors
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import EqualJitterBackoff, NoBackoff

from servicekit.settings import CommonSettings

log = structlog.get_logger()


# Connections per process; a request that finds them all busy waits up to
# REDIS_POOL_WAIT_SECONDS for one rather than failing at once.
REDIS_MAX_CONNECTIONS = 200
REDIS_POOL_WAIT_SECONDS = 2.0


REDIS_SOCKET_SECONDS = 5.0


def redis_client(settings: CommonSettings) -> aioredis.Redis:
    """A pooled asyncio Redis client; bytes in, bytes out. The pool is
    bounded and blocking: a burst queues briefly for a connection instead of
    opening one per request or failing with "too many connections".

    With settings.redis_sentinels the client asks the sentinels for the
    current primary, and asks again whenever a connection to it fails or
    finds it demoted (a read-only replica), so a failover costs the calls in
    flight during it, not a restart of the service."""
    if settings.redis_sentinels:
        return _sentinel_primary(settings)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_SECONDS,
        socket_timeout=REDIS_SOCKET_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_SECONDS,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)


# How a Sentinel client rides out a failover: a command whose connection
# fails (the primary died, or answered READONLY because it was demoted) is
# sent again on a new connection, to whichever server the sentinels name
# then, after 50 ms, 100 ms, 200 ms, ... then 0.5-1 s apart (jittered, so a
# pool of connections does not reconnect in step). Eighteen tries span 8 to
# 15 s: the local sentinels promote the replica 3-4 s after a kill -9 (1.5 s
# to declare the primary down, then a vote and the promotion; 7 s on a
# loaded 2-core test machine), production's (down after 5 s) in about 8 s,
# so a call in flight during a failover waits for it rather than fails; the
# caller's own deadline (a gRPC deadline cancels the handler) still bounds
# the wait. Beyond that the call fails with the connection error, which the
# services answer as UNAVAILABLE, and the caller retries with its
# idempotency key.
SENTINEL_RETRY_ATTEMPTS = 18
SENTINEL_RETRY_BASE_SECONDS = 0.05
SENTINEL_RETRY_CAP_SECONDS = 1.0
# The sentinels themselves: one that does not answer within this is
# skipped for the next (their answers are tiny and local).
SENTINEL_QUERY_SECONDS = 1.0


class PrimaryFollowingConnection(SentinelManagedConnection):
    """A connection to the primary that asks the sentinels where it is each
    time it (re)connects. redis-py's own asks only when a connection is
    taken from the pool: a command's retries reconnect to the address it
    had, so during a failover every retry knocks on the dead primary (or on
    the old one restarted, still a primary for a moment, where the write
    would be lost) until the retries run out (redis/redis-py#3874, open)."""

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        # One attempt per address: the command's retry, which comes back
        # here, is what waits and tries again.
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)

    async def connect_to(self, address: tuple[str, int]) -> None:
        # From connect(): the address was just asked for.
        self.host, self.port = address
        await super().connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (each new connection asks the sentinels where the
    primary is) with the blocking pool's bound: a burst beyond
    REDIS_MAX_CONNECTIONS queues briefly for a connection, as it does
    without Sentinel, instead of failing with "too many connections"."""


class SentinelRedis(aioredis.Redis):
    """The primary's client; closing it also closes its connections to the
    sentinels (redis-py leaves those to the Sentinel object, which the
    client's owner never sees)."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


def _url_password(url: SplitResult) -> str | None:
    return unquote(url.password) if url.password else None


def _sentinel_primary(settings: CommonSettings) -> aioredis.Redis:
    url = urlsplit(settings.redis_url)
    database = int(url.path.lstrip("/") or 0)
    password = _url_password(url)
    sentinels = [_host_port(address) for address in settings.redis_sentinels]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels,
        # What the sentinels themselves are asked with: no retries, so a
        # dead sentinel costs one refused connection (or one timeout) and
        # the next is asked; redis-py's default would retry it ten times.
        sentinel_kwargs={
            "socket_timeout": SENTINEL_QUERY_SECONDS,
            "socket_connect_timeout": SENTINEL_QUERY_SECONDS,
            "retry": Retry(NoBackoff(), 0),
            **({"password": password} if settings.redis_sentinel_auth and password else {}),
        },
        socket_timeout=REDIS_SOCKET_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_SECONDS,
        db=database,
        password=password,
        health_check_interval=30,
        # ConnectionError covers a refused or reset connection, "no primary
        # found" (MasterNotFoundError, while the sentinels still vote) and
        # the READONLY of a demoted primary (redis-py's sentinel connection
        # turns it into a ConnectionError after dropping the connection, so
        # the next try asks the sentinels again).
        retry=Retry(
            EqualJitterBackoff(cap=SENTINEL_RETRY_CAP_SECONDS, base=SENTINEL_RETRY_BASE_SECONDS),
            SENTINEL_RETRY_ATTEMPTS,
            (redis_errors.ConnectionError, redis_errors.TimeoutError),
        ),
    )
    primary = sentinel.master_for(
        settings.redis_sentinel_service,
        redis_class=SentinelRedis,
        connection_pool_class=BlockingSentinelConnectionPool,
        connection_class=PrimaryFollowingConnection,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_SECONDS,
    )
    assert isinstance(primary, SentinelRedis)
    primary.sentinel_manager = sentinel
    return primary


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"{address!r} is not host:port")
    return host, int(port)


@contextlib.asynccontextmanager
async def redis_connection(settings: CommonSettings) -> AsyncIterator[aioredis.Redis]:
    """A pooled client (redis_client) that has answered a PING, so a service
    whose Redis is unreachable fails at start rather than on its first
    request. On exit the pool's connections are closed too: a client given a
    pool of its own making leaves it open on aclose() by default."""
    client = redis_client(settings)
    try:
        try:
            await client.ping()
        except redis_errors.ConnectionError:
            # redis-py reports sentinels that refused us as "No master
            # found", which reads like a set with no primary: ask once more
            # to tell a refused login apart, and say what to set.
            refusal = await _redis_login_refusal(settings)
            if refusal is None:
                raise
            raise RedisLoginRefused(refusal) from None
        yield client
    finally:
        await client.aclose(close_connection_pool=True)


class RedisLoginRefused(SystemExit):
    """A Redis server or sentinel refused our login: a configuration error,
    reported once at start with what to check (never the password)."""


async def _redis_login_refusal(settings: CommonSettings) -> str | None:
    """Why the login was refused, asking each sentinel (or the server)
    directly with what the client sends it; None: nobody refused a login."""
    url = urlsplit(settings.redis_url)
    password = _url_password(url)
    if not settings.redis_sentinels:
        host, port = url.hostname or "127.0.0.1", url.port or 6379
        if await _refuses(host, port, password):
            return f"Redis at {host}:{port} refused the login: check the password of PETITIONS_REDIS_URL"
        return None
    sent = password if settings.redis_sentinel_auth else None
    for address in settings.redis_sentinels:
        host, port = _host_port(address)
        if await _refuses(host, port, sent):
            if not settings.redis_sentinel_auth:
                return (
                    f"Redis sentinel {address} refused the login: it requires a password; set"
                    " PETITIONS_REDIS_SENTINEL_AUTH=true to send it the password of PETITIONS_REDIS_URL"
                )
            return f"Redis sentinel {address} refused the password of PETITIONS_REDIS_URL"
    return None


async def _refuses(host: str, port: int, password: str | None) -> bool:
    probe = aioredis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=SENTINEL_QUERY_SECONDS,
        socket_connect_timeout=SENTINEL_QUERY_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        await probe.ping()
    except redis_errors.AuthenticationError:
        return True
    except redis_errors.RedisError:
        return False
    finally:
        await probe.aclose()
    return False


def kafka_options(settings: CommonSettings) -> dict[str, Any]:
    """The connection arguments every aiokafka client of ours takes
    (producer, consumer, admin): where the brokers are and how to log in.
    Spread into the constructor: AIOKafkaConsumer(**kafka_options(s), ...)."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
    if settings.kafka_security_protocol == "PLAINTEXT":
        return options
    if not settings.kafka_username:
        raise SystemExit("PETITIONS_KAFKA_USERNAME is required with PETITIONS_KAFKA_SECURITY_PROTOCOL=SASL_SSL")
    context = ssl.create_default_context(cafile=str(settings.kafka_ca_file) if settings.kafka_ca_file else None)
    return {
        **options,
        "security_protocol": "SASL_SSL",
        "ssl_context": context,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": settings.read_optional_secret(settings.kafka_password_file, "Kafka"),
    }


class KafkaLoginRefused(SystemExit):
    """The brokers refused our credentials or our TLS handshake: a
    configuration error, reported once at start with what to check."""


async def start_kafka_client(client: Any, settings: CommonSettings, role: str) -> None:
    """Starts an aiokafka producer, consumer or admin client. A refused
    login (or a TLS listener dialled in plain text) becomes a start-up error
    that names the broker and what to check: aiokafka itself only logs it
    and reports "Unable to bootstrap", which reads like a broker that is
    down."""
    try:
        await client.start()
    except KafkaConnectionError:
        refusal = await _login_refusal(settings)
        if refusal is None:
            raise
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise KafkaLoginRefused(f"Kafka {role}: {refusal}") from None


# One probe of one broker, after the client itself gave up: long enough for
# a loaded broker's TLS handshake and SCRAM exchange, short enough that a
# broker that never answers does not stall the start-up error for long.
LOGIN_PROBE_SECONDS = 10.0


async def _login_refusal(settings: CommonSettings) -> str | None:
    """Tries each bootstrap broker in turn as the client would; says which
    one refused the TLS handshake or the credentials (or, for a PLAINTEXT
    client, which one answers in TLS), or None if none did: the brokers
    are then just unreachable, which the caller's own error says."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return await _tls_listener_refusal(settings)
    options = kafka_options(settings)
    hint = (
        f" (user {settings.kafka_username!r}, {settings.kafka_sasl_mechanism} over {settings.kafka_security_protocol};"
        " check PETITIONS_KAFKA_USERNAME, PETITIONS_KAFKA_PASSWORD_FILE and PETITIONS_KAFKA_CA_FILE)"
    )
    for address in _bootstrap_addresses(settings):
        host, port = _host_port(address)
        try:
            connection = await create_conn(
                host,
                port,
                ssl_context=options["ssl_context"],
                security_protocol=options["security_protocol"],
                sasl_mechanism=options["sasl_mechanism"],
                sasl_plain_username=options["sasl_plain_username"],
                sasl_plain_password=options["sasl_plain_password"],
                request_timeout_ms=int(LOGIN_PROBE_SECONDS * 1000),
            )
        except (SaslAuthenticationFailed, AuthenticationFailedError) as error:
            return f"the broker at {address} refused the login: {error}{hint}"
        except ssl.SSLError as error:
            return f"the TLS handshake with the broker at {address} failed: {error}{hint}"
        except (TimeoutError, OSError, KafkaError):
            continue
        connection.close()
        return None
    return None


async def _tls_listener_refusal(settings: CommonSettings) -> str | None:
    """A PLAINTEXT client's Kafka request to a TLS listener is read as a
    broken handshake and the connection closed, which aiokafka reports as a
    broker that is not there. A TLS handshake that completes (the
    certificate unchecked: this only asks what the port speaks) tells the
    two apart."""
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    for address in _bootstrap_addresses(settings):
        host, port = _host_port(address)
        try:
            async with asyncio.timeout(LOGIN_PROBE_SECONDS):
                _, writer = await asyncio.open_connection(host, port, ssl=probe)
        except (TimeoutError, OSError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return (
            f"the broker at {address} speaks TLS, and this client is set to PLAINTEXT"
            " (set PETITIONS_KAFKA_SECURITY_PROTOCOL=SASL_SSL, with PETITIONS_KAFKA_USERNAME,"
            " PETITIONS_KAFKA_PASSWORD_FILE and PETITIONS_KAFKA_CA_FILE)"
        )
    return None


def _bootstrap_addresses(settings: CommonSettings) -> list[str]:
    return [address.strip() for address in settings.kafka_bootstrap.split(",") if address.strip()]


def idempotent_producer(settings: CommonSettings, *, linger_ms: int = 2) -> AIOKafkaProducer:
    """A producer that never duplicates or reorders a partition's messages on
    retry (enable_idempotence implies acks=all), so an acknowledged send is on
    every in-sync replica."""
    return AIOKafkaProducer(
        **kafka_options(settings),
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
        await start_kafka_client(self._producer, self._settings, "producer")
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


def cassandra_cluster(
    hosts: Sequence[str],
    port: int,
    connect_timeout: float = 10,
    *,
    datacenter: str | None = None,
    consistency: str = "LOCAL_QUORUM",
    username: str = "",
    password: str = "",
) -> Cluster:
    """A driver Cluster for the given contact points, configured one way
    everywhere: queries stay in the local data centre, token-aware (to a
    replica of the partition), at `consistency`; conditional writes (LWT)
    at LOCAL_SERIAL, the matching Paxos quorum."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=datacenter)),
        request_timeout=30,
        consistency_level=ConsistencyLevel.name_to_value[consistency],
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
    )
    return Cluster(
        list(hosts),
        port=port,
        protocol_version=5,
        connect_timeout=connect_timeout,
        # The driver's schema and topology queries (2 s by default): on a
        # busy node, migrate and a service's start failed OperationTimedOut
        # while the node answered ordinary queries.
        control_connection_timeout=max(connect_timeout, 10),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=PlainTextAuthProvider(username, password) if username else None,
    )


def cassandra_cluster_for(settings: CommonSettings, connect_timeout: float = 10) -> Cluster:
    """cassandra_cluster() as the settings say."""
    return cassandra_cluster(
        settings.cassandra_hosts,
        settings.cassandra_port,
        connect_timeout,
        datacenter=settings.cassandra_datacenter,
        consistency=settings.cassandra_consistency,
        username=settings.cassandra_username,
        password=settings.read_optional_secret(settings.cassandra_password_file, "Cassandra"),
    )


class CassandraSession:
    """A cassandra-driver session whose queries are awaited from asyncio.

    The driver runs its own I/O thread; each ResponseFuture is bridged to an
    asyncio future on the caller's loop.
    """

    def __init__(self, settings: CommonSettings):
        self._cluster = cassandra_cluster_for(settings)
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
