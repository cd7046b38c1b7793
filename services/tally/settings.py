"""Tally's settings."""

from __future__ import annotations

from servicekit.settings import ServiceSettings


class TallySettings(ServiceSettings):
    grpc_address: str = "127.0.0.1:50063"
    metrics_port: int = 9163
    consumer_group: str = "tally"
    # Messages taken from Kafka at once; one Redis script and one round of
    # Cassandra writes per partition per batch.
    max_batch_messages: int = 2_000
    poll_timeout_ms: int = 200
    # Concurrent Cassandra writes while applying one batch.
    cassandra_write_concurrency: int = 64
    catalogue_cache_seconds: float = 5.0
    lag_cache_seconds: float = 1.0
    grace_seconds: float = 5.0
