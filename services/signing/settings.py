"""Signing's settings."""

from __future__ import annotations

from servicekit.settings import ServiceSettings


class SigningSettings(ServiceSettings):
    grpc_address: str = "127.0.0.1:50062"
    metrics_port: int = 9162
    identity_address: str = "127.0.0.1:50061"
    # Longest wait for Kafka's acknowledgement before answering UNAVAILABLE;
    # the client may retry with the same idempotency key.
    publish_timeout_seconds: float = 10.0
    # Signatures awaiting Kafka's acknowledgement at once; beyond this the
    # broker is not keeping up and new requests are shed with
    # RESOURCE_EXHAUSTED rather than queued without bound.
    max_in_flight: int = 5_000
    catalogue_cache_seconds: float = 2.0
    # How long a replayed idempotency key returns the first answer.
    idempotency_ttl_seconds: int = 24 * 3600
    grace_seconds: float = 10.0
