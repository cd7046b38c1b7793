"""Tally's gRPC wiring and its one factory, `create_server(settings)`: the
stores entered on one AsyncExitStack, each ready when entered, the gRPC
server last, so shutdown unwinds them in reverse order by construction
(with the consume loop's drain in its place among them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import tally_pb2, tally_pb2_grpc
from servicekit.grpc_server import ServiceServer
from servicekit.identity_keys import identity_keys
from servicekit.lifecycle import FactoryApp, RunningServer, background_tasks, run_service, serving
from servicekit.petition_view import PetitionView
from servicekit.signature_topic import check_signature_partitions
from servicekit.staff_auth import StaffAuthorisation
from servicekit.stores import (
    CassandraSession,
    ReplaceableProducer,
    cassandra_session,
    kafka_options,
    kafka_producer,
    redis_connection,
    start_kafka_client,
)
from services.tally.archive import SignatureArchive
from services.tally.consumer import DrainOnRevoke, SignatureConsumer
from services.tally.counters import ShardedCounters
from services.tally.dead_letters import DeadLetterSink
from services.tally.reader import TallyReader, TallySnapshot
from services.tally.recount import Recount
from services.tally.recovery import ShardRecovery
from services.tally.settings import TallySettings
from services.tally.signature_lookup import SignatureLookup
from services.tally.signature_selection import SignatureQuery, select
from services.tally.steps.chain import ChainParts, tally_chain
from services.tally.steps.commit import Progress
from services.tally.steps.dead_letter import DeadLetterLimits
from services.tally.thresholds import ThresholdStore, ThresholdWatcher
from services.tally.watch import TallyFeeds

Context = grpc.aio.ServicerContext[Any, Any]

# An unpublished crossing younger than this may still be being announced by
# the worker that recorded it.
THRESHOLD_SWEEP_GRACE_SECONDS = 10.0
# How often petitions a batch touched before the view knew them are checked
# against their thresholds again.
UNSEEN_PETITIONS_CHECK_SECONDS = 0.5


class TallyServicer(tally_pb2_grpc.TallyServicer):
    def __init__(self, reader: TallyReader, feeds: TallyFeeds, staff: StaffAuthorisation, lookup: SignatureLookup):
        self._reader = reader
        self._feeds = feeds
        self._staff = staff
        self._lookup = lookup

    async def GetTally(self, request: tally_pb2.GetTallyRequest, context: Context) -> tally_pb2.PetitionTally:
        return tally_message(await self._reader.read(request.petition_id))

    async def WatchTally(
        self, request: tally_pb2.WatchTallyRequest, context: Context
    ) -> AsyncIterator[tally_pb2.PetitionTally]:
        async for snapshot in self._feeds.watch(request.petition_id):
            yield tally_message(snapshot)

    async def SelectSignatures(
        self, request: tally_pb2.SelectSignaturesRequest, context: Context
    ) -> tally_pb2.SelectSignaturesResponse:
        # Checked before the request is read: it names signers.
        await self._staff.administrator(context.invocation_metadata())
        query = SignatureQuery(
            petition_id=request.petition_id,
            signers=tuple(request.signers),
            ip_hash=request.ip_hash,
            signed_after=seconds_of(request.signed_after, request.HasField("signed_after")),
            signed_before=seconds_of(request.signed_before, request.HasField("signed_before")),
        )
        query.validate()
        return tally_pb2.SelectSignaturesResponse(
            signatures=[
                tally_pb2.StoredSignature(signer=s.signer, ip_hash=s.ip_hash, signed_at=timestamp(s.signed_at))
                for s in select(query, await self._lookup(query.petition_id))
            ]
        )


def seconds_of(value: Timestamp, present: bool) -> float | None:
    return value.ToNanoseconds() / 1e9 if present else None


def timestamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def tally_message(snapshot: TallySnapshot) -> tally_pb2.PetitionTally:
    return tally_pb2.PetitionTally(
        petition_id=snapshot.petition_id,
        total=snapshot.totals.total,
        by_territory=snapshot.totals.by_territory,
        by_country=snapshot.totals.by_country,
        as_of=timestamp(snapshot.as_of),
        lag_messages=snapshot.lag_messages,
        thresholds_reached=[
            tally_pb2.ReachedThreshold(threshold_id=c.threshold_id, count=c.count, reached_at=timestamp(c.reached_at))
            for c in snapshot.thresholds_reached
        ],
    )


class SignatureLog:
    """The signatures log's partitions and end offsets, through the
    process's consumer (the group's when it consumes, else a groupless one)."""

    def __init__(self, consumer: AIOKafkaConsumer, settings: TallySettings):
        self._consumer = consumer
        self._topic = settings.signatures_topic
        self._partitions = settings.signature_partitions

    def partitions(self) -> Sequence[int]:
        known = self._consumer.partitions_for_topic(self._topic)
        return sorted(known) if known else list(range(self._partitions))

    async def end_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        ends = await self._consumer.end_offsets([TopicPartition(self._topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}


def log_consumer(settings: TallySettings, consuming: bool) -> AIOKafkaConsumer:
    """The group consumer when this process consumes; otherwise a groupless
    one, only for the log's partitions and end offsets. Not started: a
    consumer subscribes (with its rebalance listener) before it starts."""
    if not consuming:
        return AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    return AIOKafkaConsumer(
        **kafka_options(settings),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_min_bytes=settings.fetch_min_bytes,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )


@asynccontextmanager
async def started(consumer: AIOKafkaConsumer, settings: TallySettings) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer, stopped (leaving its group) when the block ends."""
    await start_kafka_client(consumer, settings, "consumer")
    try:
        yield consumer
    finally:
        await consumer.stop()


def consume_loop(
    settings: TallySettings,
    consumer: AIOKafkaConsumer,
    db: CassandraSession,
    counters: ShardedCounters,
    view: PetitionView,
    watcher: ThresholdWatcher,
    producer: ReplaceableProducer,
) -> SignatureConsumer:
    """The consume loop over the chain of steps, its consumer subscribed
    with the listener that drains the chain before partitions move."""

    async def petition_ids() -> list[str]:
        return view.ids()

    progress: Progress = {}
    recount = Recount.prepared(db, counters, settings.signature_partitions)
    chain = tally_chain(
        ChainParts(
            consumer=consumer,
            dead_letters=DeadLetterSink(producer, settings.dead_letter_topic),
            limits=DeadLetterLimits(
                settings.max_dead_letters_in_row, settings.max_dead_letter_ratio, settings.dead_letter_window
            ),
            archive=SignatureArchive.prepared(
                db, settings.cassandra_write_concurrency, settings.cassandra_rows_per_batch
            ),
            counters=counters,
            recovery=ShardRecovery(recount, counters, petition_ids),
            thresholds=watcher,
            progress=progress,
        )
    )
    consumer.subscribe([settings.signatures_topic], listener=DrainOnRevoke(chain, settings.drain_seconds))
    return SignatureConsumer(
        consumer, chain, progress, settings.max_batch_messages, settings.poll_timeout_ms, settings.batch_linger_ms
    )


@asynccontextmanager
async def create_server(settings: TallySettings) -> AsyncIterator[RunningServer]:
    """One tally process, serving on settings.grpc_address (port 0 in tests:
    the yielded port says which).

    Its role decides what it runs: the consume loop (applying the log), the
    reads (GetTally, WatchTally, SelectSignatures), or both. Readers scale
    with the crowd watching counters; consumers with the log's partitions.
    Kept apart, a refresh storm cannot slow the counting down, since reads
    and the consume loop would otherwise share one event loop. Everything
    that reads petitions (thresholds, GetTally's NOT_FOUND, which petitions
    a lost shard holds) reads the petition view: tally never reads the
    petition tables.

    Shutdown unwinds the stack: watch streams end (they never end by
    themselves, and the server's drain must not wait for them), the server
    drains, the background loops stop, then the consume loop's batches in
    flight finish and are committed before the consumer leaves the group,
    and only then do the view and the stores close."""
    consuming = settings.role in ("all", "consumer")
    reading = settings.role in ("all", "reader")
    # Every role sums or rebuilds the shards 0..signature_partitions-1: a
    # topic with another count is refused here, naming both, before any
    # store is touched (servicekit/signature_topic.py says why it is not
    # adapted to).
    await check_signature_partitions(settings, f"tally ({settings.role})")
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(cassandra_session(settings))
        redis = await stack.enter_async_context(redis_connection(settings))
        counters = ShardedCounters(redis, settings.signatures_topic)
        thresholds = ThresholdStore.prepared(db)
        consumer = log_consumer(settings, consuming)
        signature_log = SignatureLog(consumer, settings)
        # Returns once the view holds every petition the topic held, so no
        # read is answered NOT_FOUND for a petition created before this start.
        view = await stack.enter_async_context(PetitionView.open(settings))
        loop: SignatureConsumer | None = None
        watcher: ThresholdWatcher | None = None
        if consuming:
            producer = await stack.enter_async_context(kafka_producer(settings))
            watcher = ThresholdWatcher(
                view, counters, signature_log.partitions, thresholds, producer, settings.petition_events_topic
            )
            await watcher.republish_pending()
            loop = consume_loop(settings, consumer, db, counters, view, watcher, producer)
        await stack.enter_async_context(started(consumer, settings))
        if loop is not None:
            # Runs once the background loops have stopped (entered before
            # them) and before the consumer leaves the group (entered after
            # it): the batches in flight finish and are committed.
            stack.push_async_callback(loop.drain, settings.drain_seconds)
        background = await stack.enter_async_context(background_tasks())
        # A view that stops following would serve ever older states: the
        # process exits instead, for its supervisor to restart it.
        background.start(view.followed(), "petition-view")
        if loop is not None and watcher is not None:
            background.start(loop.run(), "consume-signatures")
            background.start(
                watcher.sweep_unpublished(settings.threshold_sweep_seconds, THRESHOLD_SWEEP_GRACE_SECONDS),
                "threshold-sweep",
            )
            background.start(watcher.check_unseen(UNSEEN_PETITIONS_CHECK_SECONDS), "threshold-new-petitions")
        served = [tally_pb2.DESCRIPTOR.services_by_name["Tally"].full_name] if reading else []
        server = ServiceServer(served, settings)
        feeds: TallyFeeds | None = None
        if reading:
            # For SelectSignatures' staff credential; when identity is not
            # up yet, its keys are fetched on the first call.
            keys = await stack.enter_async_context(identity_keys(settings.identity_address))
            reader = TallyReader(
                counters,
                view,
                thresholds,
                signature_log.partitions,
                signature_log.end_offsets,
                settings.lag_cache_seconds,
                settings.tally_cache_seconds,
            )
            feeds = TallyFeeds(reader.read, settings.watch_interval_ms / 1000, settings.max_watchers)
            lookup = SignatureLookup.prepared(db, settings.signature_partitions)
            servicer = TallyServicer(reader, feeds, StaffAuthorisation(keys), lookup)
            tally_pb2_grpc.add_TallyServicer_to_server(servicer, server.server)
        await stack.enter_async_context(serving(server, settings.grace_seconds))
        if feeds is not None:
            # Pushed after the server, so it runs before the server drains.
            stack.callback(feeds.close)
        yield RunningServer(server.port, background)


def main() -> None:
    settings = TallySettings()
    asyncio.run(run_service("tally", settings, lambda: FactoryApp(lambda: create_server(settings))))
