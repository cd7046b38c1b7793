"""The coalescing read cache (pure logic): one upstream read however many
concurrent readers, values reused only while young, failures never cached."""

from __future__ import annotations

import asyncio

import pytest

from servicekit.coalescing import CoalescingCache


class Upstream:
    """Counts reads; each read waits until released, so tests control overlap."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None

    async def read(self, key: str) -> str:
        self.reads.append(key)
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return f"{key}#{len(self.reads)}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_misses_share_one_read() -> None:
    upstream = Upstream()
    cache = CoalescingCache(upstream.read, max_age_seconds=1.0)
    readers = [asyncio.create_task(cache.get("p")) for _ in range(1000)]
    await asyncio.sleep(0)
    upstream.release.set()
    assert set(await asyncio.gather(*readers)) == {"p#1"}
    assert upstream.reads == ["p"]


async def test_a_value_is_reused_while_young_and_read_again_when_old() -> None:
    upstream, clock = Upstream(), Clock()
    upstream.release.set()
    cache = CoalescingCache(upstream.read, max_age_seconds=0.25, clock=clock)
    assert await cache.get("p") == "p#1"
    clock.now += 0.2
    assert await cache.get("p") == "p#1"
    clock.now += 0.1
    assert await cache.get("p") == "p#2"
    assert await cache.get("q") == "q#3"


async def test_a_failed_read_reaches_every_waiter_and_is_not_kept() -> None:
    upstream = Upstream()
    upstream.fail_with = ConnectionError("redis is down")
    cache = CoalescingCache(upstream.read, max_age_seconds=10.0)
    readers = [asyncio.create_task(cache.get("p")) for _ in range(3)]
    await asyncio.sleep(0)
    upstream.release.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    upstream.fail_with = None
    assert await cache.get("p") == "p#2"


async def test_one_reader_giving_up_does_not_cancel_the_others_read() -> None:
    upstream = Upstream()
    cache = CoalescingCache(upstream.read, max_age_seconds=1.0)
    impatient = asyncio.create_task(cache.get("p"))
    patient = asyncio.create_task(cache.get("p"))
    await asyncio.sleep(0)
    impatient.cancel()
    upstream.release.set()
    assert await patient == "p#1"
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_the_number_of_kept_values_is_bounded() -> None:
    upstream = Upstream()
    upstream.release.set()
    cache = CoalescingCache(upstream.read, max_age_seconds=60.0, max_entries=2)
    for key in ("a", "b", "c"):
        await cache.get(key)
    assert await cache.get("c") == "c#3"
    assert await cache.get("a") == "a#4", "the oldest value should have been dropped"
