"""Redis: Debian's redis-server with the stack's own configuration."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.local.fetch import ensure_redis_server
from deploy.local.layout import Layout


@dataclass(frozen=True)
class Redis:
    name: str = "redis"
    start_timeout: float = 20.0
    stop_timeout: float = 20.0

    def fetch(self, layout: Layout) -> None:
        ensure_redis_server()

    def prepare(self, layout: Layout) -> list[str]:
        data = layout.data(self.name)
        data.mkdir(parents=True, exist_ok=True)
        return [
            ensure_redis_server(),
            "--port", str(layout.ports.redis),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            # Locally every write is appended and fsynced each second, so a
            # restart (or a crash) keeps the counters.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def ready(self, layout: Layout) -> bool:
        import redis

        client = redis.Redis(port=layout.ports.redis, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def port(self, layout: Layout) -> int:
        return layout.ports.redis
