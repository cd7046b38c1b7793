"""WatchTally: the live counter. Watchers get the tally at once and then each
change; a crowd of watchers of one petition costs Redis a bounded number of
reads, measured with Redis's own command statistics."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
import redis

from petitions.v1 import tally_pb2, tally_pb2_grpc
from tests.system import SystemClient

pytestmark = pytest.mark.stack

WATCHERS = 1000
CHANNELS = 10
# One feed polls every 0.5 s and a read costs one HGETALL per partition (6):
# about 12 a second. Without sharing, 1,000 watchers would cost 12,000.
MAX_HGETALL_PER_SECOND = 150


def _hgetall_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def _next_with_total(stream: grpc.aio.UnaryStreamCall, total: int) -> tally_pb2.PetitionTally:  # type: ignore[type-arg]
    while True:
        tally: tally_pb2.PetitionTally = await stream.read()  # type: ignore[assignment]
        assert tally != grpc.aio.EOF, "the stream ended"
        if tally.total >= total:
            return tally


async def test_a_watcher_sees_the_tally_at_once_then_each_change(system: SystemClient) -> None:
    petition = system.create_petition("Watched")
    async with grpc.aio.insecure_channel(system.namespace.address("tally")) as channel:
        stream = tally_pb2_grpc.TallyStub(channel).WatchTally(tally_pb2.WatchTallyRequest(petition_id=petition.id))
        first = await asyncio.wait_for(stream.read(), 10)
        assert isinstance(first, tally_pb2.PetitionTally)
        assert (first.petition_id, first.total) == (petition.id, 0)

        for territory in ("13", "2A"):
            credential = await asyncio.to_thread(system.credential, f"w-{uuid.uuid4().hex[:8]}", "FR", territory)
            await asyncio.to_thread(system.sign, credential.token, petition.id)
        update = await asyncio.wait_for(_next_with_total(stream, 2), 20)
        assert dict(update.by_territory) == {"13": 1, "2A": 1}
        assert dict(update.by_country) == {"FR": 2}
        stream.cancel()


@pytest.mark.parametrize(
    ("petition_id", "code", "message"),
    [
        ("never-created", grpc.StatusCode.NOT_FOUND, "never-created"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "petition_id"),
        ("Not An Id!", grpc.StatusCode.INVALID_ARGUMENT, "petition_id"),
    ],
)
async def test_watching_what_is_not_a_petition_is_refused(
    system: SystemClient, petition_id: str, code: grpc.StatusCode, message: str
) -> None:
    async with grpc.aio.insecure_channel(system.namespace.address("tally")) as channel:
        stream = tally_pb2_grpc.TallyStub(channel).WatchTally(tally_pb2.WatchTallyRequest(petition_id=petition_id))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(stream.read(), 10)
    assert refused.value.code() == code
    assert message in (refused.value.details() or "")


@pytest.mark.timeout(180)
async def test_a_thousand_watchers_share_one_upstream_read(system: SystemClient) -> None:
    petition = system.create_petition("Watched by a crowd")
    first_signer = await asyncio.to_thread(system.credential, f"crowd-{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(system.sign, first_signer.token, petition.id)
    await asyncio.to_thread(system.settled_tally, petition.id)
    stats = redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])

    # Separate connections: grpc would otherwise put every channel to one
    # target on one shared connection.
    channels = [
        grpc.aio.insecure_channel(system.namespace.address("tally"), options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    try:
        stubs = [tally_pb2_grpc.TallyStub(channel) for channel in channels]
        streams = [
            stubs[i % CHANNELS].WatchTally(tally_pb2.WatchTallyRequest(petition_id=petition.id))
            for i in range(WATCHERS)
        ]
        firsts = await asyncio.wait_for(asyncio.gather(*(s.read() for s in streams)), 60)
        assert all(isinstance(f, tally_pb2.PetitionTally) and f.total == 1 for f in firsts)
        assert system.metric_value("tally", "petitions_tally_watchers") >= WATCHERS

        calls_before, began = _hgetall_calls(stats), time.monotonic()
        second_signer = await asyncio.to_thread(system.credential, f"crowd-{uuid.uuid4().hex[:8]}")
        await asyncio.to_thread(system.sign, second_signer.token, petition.id)
        updates = await asyncio.wait_for(asyncio.gather(*(_next_with_total(s, 2) for s in streams)), 60)
        # Time is the subject: the Redis read rate is measured over five
        # seconds of the feeds polling with the whole crowd attached.
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - began)))
        rate = (_hgetall_calls(stats) - calls_before) / (time.monotonic() - began)

        print(f"\n{WATCHERS} watchers: {rate:.1f} HGETALL/s on Redis")
        assert len(updates) == WATCHERS
        assert all(u.total == 2 for u in updates)
        assert rate < MAX_HGETALL_PER_SECOND, f"{rate:.0f} HGETALL/s with {WATCHERS} watchers"
        for stream in streams:
            stream.cancel()
    finally:
        for channel in channels:
            await channel.close()
        stats.close()
