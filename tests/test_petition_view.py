"""The petition view (servicekit/petition_view.py) against the real Kafka:
each test produces petitions.v1.Petition records to a compacted topic of its
own, as the petitions service does on petition-state, and reads them back
only through PetitionView."""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from petitions.v1 import identity_pb2, petition_pb2
from servicekit.petition_view import PetitionState, PetitionView
from servicekit.settings import CommonSettings
from tests.harness import Namespace
from tests.waiting import eventually_async

pytestmark = pytest.mark.stack

OPEN = petition_pb2.PETITION_STATE_OPEN
CLOSED = petition_pb2.PETITION_STATE_CLOSED


@pytest.fixture
async def view_settings(stack: CommonSettings, namespace: Namespace) -> CommonSettings:
    """Settings whose petition-state topic is this test's own: compacted, 3
    partitions, as `petitions migrate` creates the real one. The session's
    namespace deletes it at the end (its prefix)."""
    settings = CommonSettings(
        kafka_bootstrap=stack.kafka_bootstrap, topic_prefix=f"{namespace.topic_prefix}view-{uuid.uuid4().hex[:8]}-"
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(settings.petition_state_topic, 3, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    return settings


@pytest.fixture
async def producer(stack: CommonSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def petition(petition_id: str, version: int, state: int = OPEN, **fields: object) -> petition_pb2.Petition:
    return petition_pb2.Petition(id=petition_id, state=state, version=version, **fields)  # type: ignore[arg-type]


async def publish(producer: AIOKafkaProducer, topic: str, petition_id: str, value: bytes | None) -> None:
    await producer.send_and_wait(topic, value, key=petition_id.encode())


def holds_version(view: PetitionView, petition_id: str, version: int) -> bool:
    held = view.get(petition_id)
    return held is not None and held.version == version


def records(outcome: str) -> float:
    return REGISTRY.get_sample_value("petitions_petition_view_records_total", {"outcome": outcome}) or 0.0


async def test_the_view_opens_holding_everything_the_topic_held(
    view_settings: CommonSettings, producer: AIOKafkaProducer
) -> None:
    topic = view_settings.petition_state_topic
    ids = [f"v-{uuid.uuid4().hex[:10]}" for _ in range(30)]
    for petition_id in ids:
        await publish(producer, topic, petition_id, petition(petition_id, 1).SerializeToString())
    # A later state of the first one, with every field the view keeps.
    closes_at = petition_pb2.Petition().closes_at
    closes_at.FromSeconds(1_900_000_000)
    latest = petition(
        ids[0],
        2,
        CLOSED,
        type="assemblee",
        closes_at=closes_at,
        thresholds=[
            petition_pb2.Threshold(id="plenary", label="Plenary", signatures=500, min_territories=30),
            petition_pb2.Threshold(id="committee", label="Committee", signatures=100),
        ],
        eligibility=petition_pb2.Eligibility(
            countries=["FR"],
            adults_only=True,
            methods=[identity_pb2.VERIFICATION_METHOD_OIDC],
            accept_declared_adults=False,
        ),
    )
    await publish(producer, topic, ids[0], latest.SerializeToString())
    # A petition removed before the view opened is not in it.
    await publish(producer, topic, ids[1], None)

    async with PetitionView.open(view_settings) as view:
        # No waiting: open returns only once the view read the whole topic.
        assert view.caught_up
        assert view.ids() == sorted(ids[:1] + ids[2:])
        first = view.get(ids[0])
        assert first is not None
        assert (first.state, first.version, first.type, first.closes_at) == (
            PetitionState.CLOSED,
            2,
            "assemblee",
            1_900_000_000.0,
        )
        assert first.opens_at is None
        assert [(t.id, t.signatures, t.min_territories) for t in first.thresholds] == [
            ("committee", 100, 0),
            ("plenary", 500, 30),
        ]
        assert first.eligibility.countries == frozenset({"FR"})
        assert first.eligibility.adults_only
        assert first.eligibility.methods == frozenset({"oidc"})
        assert not first.eligibility.accept_declared_adults
        assert not first.accepts_signatures_at(time.time())
        second = view.get(ids[2])
        assert second is not None
        assert second.accepts_signatures_at(time.time())
        assert view.get("v-never-published") is None


async def test_the_view_follows_changes_and_tombstones(
    view_settings: CommonSettings, producer: AIOKafkaProducer
) -> None:
    topic = view_settings.petition_state_topic
    async with PetitionView.open(view_settings) as view:
        assert len(view) == 0
        petition_id = f"v-{uuid.uuid4().hex[:10]}"
        await publish(producer, topic, petition_id, petition(petition_id, 1).SerializeToString())
        await eventually_async(lambda: view.get(petition_id), 5, interval=0.01, message="new petition not seen")

        await publish(producer, topic, petition_id, petition(petition_id, 3, CLOSED).SerializeToString())
        await eventually_async(
            lambda: (p := view.get(petition_id)) is not None and p.state is PetitionState.CLOSED,
            5,
            interval=0.01,
            message="close not seen",
        )
        # An older state published again after a newer one changes nothing;
        # the record after it shows the view has read past it.
        stale_before = records("stale")
        await publish(producer, topic, petition_id, petition(petition_id, 2, OPEN).SerializeToString())
        await eventually_async(lambda: records("stale") > stale_before, 5, interval=0.01, message="stale not seen")
        held = view.get(petition_id)
        assert held is not None
        assert (held.state, held.version) == (PetitionState.CLOSED, 3)

        await publish(producer, topic, petition_id, None)
        await eventually_async(
            lambda: view.get(petition_id) is None, 5, interval=0.01, message="tombstone did not remove it"
        )
        assert view.age_seconds() < 5


async def test_an_undecodable_record_is_skipped_and_counted(
    view_settings: CommonSettings, producer: AIOKafkaProducer
) -> None:
    topic = view_settings.petition_state_topic
    petition_id = f"v-{uuid.uuid4().hex[:10]}"
    skipped_before = records("skipped")
    async with PetitionView.open(view_settings) as view:
        # Not a protobuf message at all (a truncated varint tag), then a
        # Petition whose id is not its key, then a good record of the same
        # key: the bad ones are skipped, the good one after them is applied.
        await publish(producer, topic, petition_id, b"\xff\xff\xff")
        await publish(producer, topic, petition_id, petition("v-another-one", 1).SerializeToString())
        await publish(producer, topic, petition_id, petition(petition_id, 1).SerializeToString())
        await eventually_async(
            lambda: view.get(petition_id), 5, interval=0.01, message="the record after the bad ones was not applied"
        )
        assert records("skipped") - skipped_before == 2
        assert view.get("v-another-one") is None


async def test_a_change_reaches_the_view_within_a_second(
    view_settings: CommonSettings, producer: AIOKafkaProducer
) -> None:
    topic = view_settings.petition_state_topic
    petition_id = f"v-{uuid.uuid4().hex[:10]}"
    latencies = []
    async with PetitionView.open(view_settings) as view:
        for version in range(1, 51):
            state = CLOSED if version % 2 else OPEN
            published = time.perf_counter()
            await publish(producer, topic, petition_id, petition(petition_id, version, state).SerializeToString())
            await eventually_async(
                functools.partial(holds_version, view, petition_id, version),
                5,
                interval=0.002,
                message=f"version {version} not seen",
            )
            latencies.append(time.perf_counter() - published)
    p50, worst = statistics.median(latencies), max(latencies)
    print(f"\npetition view: {len(latencies)} changes, publish → seen p50 {p50 * 1e3:.1f} ms, max {worst * 1e3:.1f} ms")
    assert worst < 1.0, f"a change took {worst:.3f} s to reach the view"


async def test_a_petition_published_just_before_a_read_is_found_at_once(
    view_settings: CommonSettings, producer: AIOKafkaProducer
) -> None:
    """get_current reads what the topic held when it was called: a petition
    whose publication Kafka acknowledged is found without waiting for the
    follower (as a Sign right after CreatePetition needs)."""
    topic = view_settings.petition_state_topic
    async with PetitionView.open(view_settings) as view:
        missed_by_get = 0
        for _ in range(20):
            petition_id = f"v-{uuid.uuid4().hex[:10]}"
            await publish(producer, topic, petition_id, petition(petition_id, 1).SerializeToString())
            missed_by_get += view.get(petition_id) is None
            found = await view.get_current(petition_id)
            assert found is not None
            assert found.id == petition_id
        print(f"\nplain get() missed {missed_by_get} of 20 petitions published a moment before")
        started = time.perf_counter()
        assert await view.get_current("v-never-published") is None
        assert time.perf_counter() - started < 1.0
