"""Tally's gRPC wiring and its consume loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import tally_pb2, tally_pb2_grpc
from servicekit.grpc_server import ServiceServer
from servicekit.identity_keys import identity_keys
from servicekit.lifecycle import GrpcApp, run_service
from servicekit.petition_view import PetitionView
from servicekit.staff_auth import StaffAuthorisation
from servicekit.stores import CassandraSession, ReplaceableProducer, redis_client
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


class TallyApp(GrpcApp):
    """Everything one tally process runs, with one start/stop pair.

    Its role decides what that is: the consume loop (applying the log),
    the reads (GetTally, WatchTally), or both. Readers scale with the crowd
    watching counters; consumers with the log's partitions. Kept apart, a
    refresh storm cannot slow the counting down, since reads and the
    consume loop would otherwise share one event loop."""

    def __init__(self, settings: TallySettings):
        self.settings = settings
        self.consuming = settings.role in ("all", "consumer")
        self.reading = settings.role in ("all", "reader")
        topic = settings.signatures_topic
        self.redis = redis_client(settings)
        self.cassandra = CassandraSession(settings)
        self.producer = ReplaceableProducer(settings)
        # The group consumer when this process consumes; otherwise a
        # groupless one, only for the log's partitions and end offsets.
        self.consumer = (
            # Subscribed once its chain exists (_with_view), with the
            # listener that drains the chain before partitions move.
            AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=settings.consumer_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_min_bytes=settings.fetch_min_bytes,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
            )
            if self.consuming
            else AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        )
        self.archive = SignatureArchive(
            self.cassandra, settings.cassandra_write_concurrency, settings.cassandra_rows_per_batch
        )
        self.counters = ShardedCounters(self.redis, topic)
        self.thresholds = ThresholdStore(self.cassandra)
        self.recount = Recount(self.cassandra, self.counters, settings.signature_partitions)
        self._stores = contextlib.AsyncExitStack()
        # Built once the petition view is open (start), as they read it.
        self.feeds: TallyFeeds | None = None
        self.signature_loop: SignatureConsumer | None = None
        served = [tally_pb2.DESCRIPTOR.services_by_name["Tally"].full_name] if self.reading else []
        self.server = ServiceServer(served, settings)

    def _with_view(
        self, view: PetitionView, staff: StaffAuthorisation
    ) -> tuple[ThresholdWatcher, SignatureConsumer, TallyFeeds]:
        """The parts that read petitions: thresholds from each petition's
        own, GetTally's NOT_FOUND, and which petitions a lost shard holds,
        all from the petition view (tally never reads the petition tables)."""
        settings = self.settings
        watcher = ThresholdWatcher(
            view, self.counters, self._partitions, self.thresholds, self.producer, settings.petition_events_topic
        )

        async def petition_ids() -> list[str]:
            return view.ids()

        progress: Progress = {}
        chain = tally_chain(
            ChainParts(
                consumer=self.consumer,
                dead_letters=DeadLetterSink(self.producer, settings.dead_letter_topic),
                limits=DeadLetterLimits(
                    settings.max_dead_letters_in_row, settings.max_dead_letter_ratio, settings.dead_letter_window
                ),
                archive=self.archive,
                counters=self.counters,
                recovery=ShardRecovery(self.recount, self.counters, petition_ids),
                thresholds=watcher,
                progress=progress,
            )
        )
        if self.consuming:
            self.consumer.subscribe([settings.signatures_topic], listener=DrainOnRevoke(chain, settings.drain_seconds))
        loop = SignatureConsumer(
            self.consumer,
            chain,
            progress,
            settings.max_batch_messages,
            settings.poll_timeout_ms,
            settings.batch_linger_ms,
        )
        reader = TallyReader(
            self.counters,
            view,
            self.thresholds,
            self._partitions,
            self._end_offsets,
            settings.lag_cache_seconds,
            settings.tally_cache_seconds,
        )
        feeds = TallyFeeds(reader.read, settings.watch_interval_ms / 1000, settings.max_watchers)
        if self.reading:
            lookup = SignatureLookup.prepared(self.cassandra, settings.signature_partitions)
            tally_pb2_grpc.add_TallyServicer_to_server(TallyServicer(reader, feeds, staff, lookup), self.server.server)
        return watcher, loop, feeds

    def _partitions(self) -> Sequence[int]:
        known = self.consumer.partitions_for_topic(self.settings.signatures_topic)
        return sorted(known) if known else list(range(self.settings.signature_partitions))

    async def _end_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        topic = self.settings.signatures_topic
        ends = await self.consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def start(self) -> None:
        await self.cassandra.start()
        self.thresholds.prepare()
        await self.redis.ping()
        # Returns once the view holds every petition the topic held, so no
        # read is answered NOT_FOUND for a petition created before this start.
        view = await self._stores.enter_async_context(PetitionView.open(self.settings))
        keys = await self._stores.enter_async_context(identity_keys(self.settings.identity_address))
        watcher, loop, self.feeds = self._with_view(view, StaffAuthorisation(keys))
        # A view that stops following would serve ever older states: the
        # process exits instead, for its supervisor to restart it.
        self.run_in_background(view.followed(), "petition-view")
        if self.consuming:
            self.archive.prepare()
            self.recount.prepare()
            await self.producer.start()
            await watcher.republish_pending()
        await self.consumer.start()
        if self.consuming:
            self.signature_loop = loop
            self.run_in_background(loop.run(), "consume-signatures")
            self.run_in_background(
                watcher.sweep_unpublished(self.settings.threshold_sweep_seconds, THRESHOLD_SWEEP_GRACE_SECONDS),
                "threshold-sweep",
            )
            self.run_in_background(watcher.check_unseen(UNSEEN_PETITIONS_CHECK_SECONDS), "threshold-new-petitions")
        await self.server.start()

    async def stop(self) -> None:
        # Watch streams never end by themselves: end them first, so the
        # drain is not spent waiting for them.
        if self.feeds is not None:
            self.feeds.close()
        await self.server.stop(self.settings.grace_seconds)
        await self.stop_background()
        # The consume loop is stopped; the batches it had in flight finish
        # and are committed before the consumer leaves the group (below).
        if self.signature_loop is not None:
            await self.signature_loop.drain(self.settings.drain_seconds)
        await self._stores.aclose()
        await self.consumer.stop()
        await self.producer.stop()
        await self.redis.aclose()
        await self.cassandra.stop()


def main() -> None:
    settings = TallySettings()
    asyncio.run(run_service("tally", settings, lambda: TallyApp(settings)))
