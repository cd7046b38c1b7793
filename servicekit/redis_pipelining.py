"""Implicit pipelining for Redis: the commands that concurrent requests issue
during one event-loop turn go out as one pipeline.

At a peak, dozens of Sign calls each need a Redis command at nearly the same
moment. Sent one by one, each costs a pooled connection, a socket write, a
wait and a read; sent together they cost one of each, and Redis answers them
in order. Each caller still awaits its own reply (or its own error), as if it
had sent its command alone. redis-py has no such mode (redis/redis-py#3767),
so this is the small piece ioredis calls auto-pipelining.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

# One pipeline carries at most this many commands; a larger turn is split so
# that one huge write cannot hold a connection (and every reply) back.
MAX_COMMANDS_PER_PIPELINE = 256

_Pending = tuple[tuple[EncodableT, ...], asyncio.Future[Any]]


class AutoPipeline:
    def __init__(self, redis: aioredis.Redis, max_commands: int = MAX_COMMANDS_PER_PIPELINE):
        self._redis = redis
        self._max_commands = max_commands
        self._queued: list[_Pending] = []
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, *command: EncodableT) -> Any:
        """Sends command with the others of this loop turn; returns its reply
        as Redis.execute_command would, or raises its error (a RedisError)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._queued.append((command, reply))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await reply

    async def run_script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableT]) -> Any:
        """EVALSHA, pipelined; loads the script once when Redis lost it (a
        restart or SCRIPT FLUSH) and runs it again."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.execute(*command)
        except NoScriptError:
            await self._redis.script_load(script.script)
            return await self.execute(*command)

    def _flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), self._max_commands):
            task = asyncio.create_task(self._send(queued[start : start + self._max_commands]))
            # The loop keeps only weak references to tasks.
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for command, _ in batch:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, reply in batch:
                reply.cancel()
            raise
        except Exception as error:
            # The connection failed: no reply can be trusted, every caller
            # gets the error. (A cancelled caller's future is already done.)
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(error)
            return
        for (_, reply), value in zip(batch, replies, strict=True):
            if reply.done():
                continue
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)
