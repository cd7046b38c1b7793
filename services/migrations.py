"""Creates what the services need before they start: the Cassandra keyspace
and tables, and the Kafka topics. Every step is idempotent, so `petitions
migrate` runs on every deploy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from servicekit.settings import CommonSettings
from servicekit.signature_rows import SIGNATURES_TABLE
from servicekit.stores import CassandraSession, kafka_options, start_kafka_client
from services.signature_buckets_migration import copy_unbucketed_signatures

T = TypeVar("T")


def keyspace_replication(settings: CommonSettings) -> str:
    return (
        f"{{'class': 'NetworkTopologyStrategy', '{settings.cassandra_datacenter}': {settings.cassandra_replication}}}"
    )


def cassandra_statements(settings: CommonSettings) -> list[str]:
    keyspace = settings.keyspace
    return [
        # Replicas per data centre, placed on distinct racks where there are
        # some: what production runs (cass-operator), and what a second data
        # centre would need. A single local node's SimpleSnitch reports
        # "datacenter1", the default cassandra_datacenter.
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {keyspace_replication(settings)}",
        # The petitions service's tables (it is their only writer). A petition
        # is one row: the whole petitions.v1.Petition message in `record`,
        # read and written whole, beside the columns its conditional writes
        # test (`version`) and its scans filter on. `outbox` holds the audit
        # entry of the latest change until that entry is in the audit table
        # and in Kafka: the change and its publication are one write, and a
        # crash in between is finished by the outbox sweeper.
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.petition_records (
            id text PRIMARY KEY,
            version bigint,
            state text,
            record blob,
            outbox blob,
            created_at timestamp,
            updated_at timestamp)""",
        # Append-only: one row per change, keyed by the version it produced.
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.petition_audit (
            petition_id text,
            version bigint,
            at timestamp,
            entry blob,
            PRIMARY KEY (petition_id, version))""",
        # One row per sponsor (a signer pseudonym), written once (LWT).
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.petition_sponsors (
            petition_id text,
            sponsor text,
            sponsored_at timestamp,
            PRIMARY KEY (petition_id, sponsor))""",
        # The current legislature (one row, key 'current'), moved on by LWT.
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.legislatures (
            name text PRIMARY KEY,
            current text,
            changed_at timestamp)""",
        # The system of record: one row per (petition, signer). The partition
        # is the Kafka partition the signature came through (shard) and a
        # hash of the signer (bucket, servicekit/signature_rows.py), so a
        # hot petition is spread over shards x SIGNATURE_BUCKETS bounded
        # partitions and a signer's row is still one partition read. It
        # replaced `signatures` (no bucket), copied by migrate_cassandra.
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.{SIGNATURES_TABLE} (
            petition_id text,
            shard int,
            bucket int,
            signer text,
            signature_id text,
            method text,
            country text,
            territory text,
            signed_at timestamp,
            ip_hash text,
            kafka_offset bigint,
            invalidated_at timestamp,
            invalid_reason text,
            PRIMARY KEY ((petition_id, shard, bucket), signer))""",
        # One row per threshold a petition crossed, written once (LWT);
        # `published` turns true once ThresholdReached is in Kafka, so a
        # crash in between is repaired by republishing at start.
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.thresholds_reached (
            petition_id text,
            threshold_id text,
            count bigint,
            territories int,
            reached_at timestamp,
            published boolean,
            PRIMARY KEY (petition_id, threshold_id))""",
    ]


def topics(settings: CommonSettings) -> list[NewTopic]:
    replication = settings.topic_replication
    durable = {"min.insync.replicas": str(min(2, replication)), "unclean.leader.election.enable": "false"}
    return [
        NewTopic(
            settings.signatures_topic,
            settings.signature_partitions,
            replication,
            # Signatures are the evidence behind the count; the log keeps
            # them long enough to rebuild the tally from scratch.
            topic_configs={**durable, "retention.ms": str(90 * 24 * 3600 * 1000)},
        ),
        NewTopic(settings.petition_events_topic, 3, replication, topic_configs=durable),
        # Every petition's latest state; compaction keeps one record per
        # petition, so a reader folds the whole catalogue from the start.
        NewTopic(
            settings.petition_state_topic,
            3,
            replication,
            topic_configs={**durable, "cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        ),
        NewTopic(settings.dead_letter_topic, 1, replication, topic_configs=durable),
    ]


class KeyspaceReplicationConflict(SystemExit):
    """The keyspace's replication cannot be moved to the settings' without
    a repair; migrate stops before it changes anything."""


async def move_keyspace_to_network_topology(cassandra: CassandraSession, settings: CommonSettings) -> None:
    """A keyspace created with SimpleStrategy (releases before the cluster
    profile) moves to NetworkTopologyStrategy with the same number of
    replicas in the settings' data centre. In one data centre and one rack
    both strategies choose the same replicas, so no row moves and no repair
    is needed. A different replication factor would give replicas that do
    not hold the rows yet, which a quorum read could consult without them:
    that change is refused, to be made by hand with a repair. Idempotent:
    any other keyspace, or none yet, is left to CREATE KEYSPACE."""
    rows = await cassandra.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", [settings.keyspace]
    )
    if not rows or not dict(rows[0].replication)["class"].endswith(".SimpleStrategy"):
        return
    factor = int(dict(rows[0].replication)["replication_factor"])
    if factor != settings.cassandra_replication:
        raise KeyspaceReplicationConflict(
            f"keyspace {settings.keyspace} has SimpleStrategy replication_factor {factor}, but"
            f" PETITIONS_CASSANDRA_REPLICATION={settings.cassandra_replication}: moving it to"
            " NetworkTopologyStrategy with another number of replicas needs a full repair afterwards;"
            f" run ALTER KEYSPACE {settings.keyspace} WITH replication = {keyspace_replication(settings)}"
            " then nodetool repair -full, or set PETITIONS_CASSANDRA_REPLICATION to"
            f" {factor}; nothing was changed"
        )
    await cassandra.execute(f"ALTER KEYSPACE {settings.keyspace} WITH replication = {keyspace_replication(settings)}")


async def migrate_cassandra(settings: CommonSettings) -> None:
    cassandra = CassandraSession(settings)
    await cassandra.start()
    try:
        await move_keyspace_to_network_topology(cassandra, settings)
        for statement in cassandra_statements(settings):
            await cassandra.execute(statement)
        # Data, after the tables: the rows of the table the buckets replaced.
        await copy_unbucketed_signatures(cassandra)
    finally:
        await cassandra.stop()


async def migrate_kafka(settings: CommonSettings) -> list[str]:
    """Creates missing topics; returns the names it created."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=30_000)
    await start_kafka_client(admin, settings, "admin client")
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in topics(settings) if topic.name not in existing]
        if missing:
            # Another migrator may win the race; the topics exist, which is all we need.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [topic.name for topic in missing]
    finally:
        await admin.close()


class MigrationRefused(Exception):
    """A step refused to go on (a Kafka login refused, a keyspace whose
    replication would need a repair): the message says what to do."""


async def _refusal_as_error(step: Awaitable[T]) -> T:
    # The steps refuse with SystemExit, a clear start-up error; raised
    # inside a task it would escape the event loop at once, leave the other
    # step running and print a traceback ("Task exception was never
    # retrieved"). As an ordinary exception it waits for the other.
    try:
        return await step
    except SystemExit as refusal:
        raise MigrationRefused(str(refusal.code)) from None


async def migrate(settings: CommonSettings) -> list[str]:
    """Both stores at once; each step runs to its end, then the first
    failure (if any) is raised."""
    created, cassandra = await asyncio.gather(
        _refusal_as_error(migrate_kafka(settings)),
        _refusal_as_error(migrate_cassandra(settings)),
        return_exceptions=True,
    )
    for outcome in (created, cassandra):
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(created, list)
    return created
