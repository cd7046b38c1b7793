"""Implicit pipelining against the real Redis: concurrent callers share one
round trip, yet each gets its own reply or its own error."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from servicekit.redis_pipelining import MAX_COMMANDS_PER_PIPELINE, AutoPipeline
from tests.harness import free_port


class CountingPool(aioredis.ConnectionPool):
    """Counts connection checkouts: one per round trip the client makes."""

    checkouts = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        CountingPool.checkouts += 1
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


async def test_concurrent_commands_share_round_trips_and_keep_their_replies(redis_url: str) -> None:
    client = aioredis.Redis(connection_pool=CountingPool.from_url(redis_url))
    pipeline = AutoPipeline(client)
    prefix = f"autopipe:{uuid.uuid4().hex}"
    callers = 1000
    try:
        CountingPool.checkouts = 0
        await asyncio.gather(*(pipeline.execute("SET", f"{prefix}:{i}", f"value-{i}") for i in range(callers)))
        replies = await asyncio.gather(*(pipeline.execute("INCRBY", f"{prefix}:n{i}", i) for i in range(callers)))
        values = await asyncio.gather(*(pipeline.execute("GET", f"{prefix}:{i}") for i in range(callers)))
        # Three turns of 1,000 commands, at most 256 per pipeline: 12 round
        # trips instead of 3,000.
        assert CountingPool.checkouts <= 3 * -(-callers // MAX_COMMANDS_PER_PIPELINE)
        assert replies == list(range(callers))
        assert values == [f"value-{i}".encode() for i in range(callers)]
    finally:
        await client.delete(*[f"{prefix}:{i}" for i in range(callers)], *[f"{prefix}:n{i}" for i in range(callers)])
        await client.aclose()


async def test_a_failing_command_fails_only_its_caller(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    pipeline = AutoPipeline(client)
    key = f"autopipe:{uuid.uuid4().hex}"
    try:
        outcomes = await asyncio.gather(
            pipeline.execute("SET", key, "text"),
            pipeline.execute("INCR", key),
            pipeline.execute("GET", key),
            return_exceptions=True,
        )
        before, wrong_type, after = outcomes
        assert before is True
        assert isinstance(wrong_type, ResponseError)
        assert after == b"text"
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_script_redis_forgot_is_loaded_again(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    pipeline = AutoPipeline(client)
    script = client.register_script("return tonumber(ARGV[1]) * 2")
    try:
        assert await pipeline.run_script(script, [], [21]) == 42
        # What a Redis restart does to the script cache.
        await client.script_flush()
        assert await pipeline.run_script(script, [], [50]) == 100
    finally:
        await client.aclose()


async def test_an_unreachable_redis_fails_every_caller() -> None:
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
    pipeline = AutoPipeline(client)
    try:
        outcomes = await asyncio.gather(
            *(pipeline.execute("GET", f"key-{i}") for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    finally:
        await client.aclose()
