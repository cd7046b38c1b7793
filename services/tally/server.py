"""Tally's gRPC wiring and its consume loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition

from petitions.v1 import tally_pb2, tally_pb2_grpc
from servicekit.grpc_server import ServiceServer
from servicekit.lifecycle import GrpcApp, run_service
from servicekit.stores import CassandraSession, ReplaceableProducer, redis_client
from services.catalogue.cache import CachedCatalogue
from services.catalogue.messages import timestamp
from services.catalogue.store import PetitionStore
from services.tally.applier import BatchApplier
from services.tally.archive import SignatureArchive
from services.tally.consumer import SignatureConsumer
from services.tally.counters import ShardedCounters
from services.tally.dead_letters import DeadLetterSink
from services.tally.reader import TallyReader, TallySnapshot
from services.tally.recount import Recount
from services.tally.recovery import ShardRecovery
from services.tally.settings import TallySettings
from services.tally.thresholds import ThresholdStore, ThresholdWatcher
from services.tally.watch import TallyFeeds

Context = grpc.aio.ServicerContext[Any, Any]

# An unpublished crossing younger than this may still be being announced by
# the worker that recorded it.
THRESHOLD_SWEEP_GRACE_SECONDS = 10.0


class TallyServicer(tally_pb2_grpc.TallyServicer):
    def __init__(self, reader: TallyReader, feeds: TallyFeeds):
        self._reader = reader
        self._feeds = feeds

    async def GetTally(self, request: tally_pb2.GetTallyRequest, context: Context) -> tally_pb2.PetitionTally:
        return tally_message(await self._reader.read(request.petition_id))

    async def WatchTally(
        self, request: tally_pb2.WatchTallyRequest, context: Context
    ) -> AsyncIterator[tally_pb2.PetitionTally]:
        async for snapshot in self._feeds.watch(request.petition_id):
            yield tally_message(snapshot)


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
            AIOKafkaConsumer(
                topic,
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
        self.store = PetitionStore(self.cassandra)
        self.archive = SignatureArchive(
            self.cassandra, settings.cassandra_write_concurrency, settings.cassandra_rows_per_batch
        )
        counters = ShardedCounters(self.redis, topic)
        catalogue = CachedCatalogue(self.store, settings.catalogue_cache_seconds)
        self.thresholds = ThresholdStore(self.cassandra)
        self.watcher = ThresholdWatcher(
            catalogue, counters, self._partitions, self.thresholds, self.producer, settings.petition_events_topic
        )
        self.recount = Recount(self.cassandra, counters, settings.signature_partitions)
        recovery = ShardRecovery(self.recount, counters, self._petition_ids)
        applier = BatchApplier(
            self.archive,
            counters,
            DeadLetterSink(self.producer, settings.dead_letter_topic),
            self.watcher,
            recovery,
            settings.max_dead_letters_in_row,
        )
        self.loop = SignatureConsumer(
            self.consumer, applier, settings.max_batch_messages, settings.poll_timeout_ms, settings.batch_linger_ms
        )
        reader = TallyReader(
            counters,
            catalogue,
            self.thresholds,
            self._partitions,
            self._end_offsets,
            settings.lag_cache_seconds,
            settings.tally_cache_seconds,
        )
        self.feeds = TallyFeeds(reader.read, settings.watch_interval_ms / 1000, settings.max_watchers)
        served = [tally_pb2.DESCRIPTOR.services_by_name["Tally"].full_name] if self.reading else []
        self.server = ServiceServer(served, settings)
        if self.reading:
            tally_pb2_grpc.add_TallyServicer_to_server(TallyServicer(reader, self.feeds), self.server.server)

    async def _petition_ids(self) -> list[str]:
        return [petition.id for petition in await self.store.list_all()]

    def _partitions(self) -> Sequence[int]:
        known = self.consumer.partitions_for_topic(self.settings.signatures_topic)
        return sorted(known) if known else list(range(self.settings.signature_partitions))

    async def _end_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        topic = self.settings.signatures_topic
        ends = await self.consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def start(self) -> None:
        await self.cassandra.start()
        self.store.prepare()
        self.thresholds.prepare()
        await self.redis.ping()
        if self.consuming:
            self.archive.prepare()
            self.recount.prepare()
            await self.producer.start()
            await self.watcher.republish_pending()
        await self.consumer.start()
        if self.consuming:
            self.run_in_background(self.loop.run(), "consume-signatures")
            self.run_in_background(
                self.watcher.sweep_unpublished(self.settings.threshold_sweep_seconds, THRESHOLD_SWEEP_GRACE_SECONDS),
                "threshold-sweep",
            )
        await self.server.start()

    async def stop(self) -> None:
        # Watch streams never end by themselves: end them first, so the
        # drain is not spent waiting for them.
        self.feeds.close()
        await self.server.stop(self.settings.grace_seconds)
        await self.stop_background()
        await self.consumer.stop()
        await self.producer.stop()
        await self.redis.aclose()
        await self.cassandra.stop()


def main() -> None:
    settings = TallySettings()
    asyncio.run(run_service("tally", settings, lambda: TallyApp(settings)))
