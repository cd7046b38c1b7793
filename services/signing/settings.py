"""Signing's settings."""

from __future__ import annotations

from servicekit.rate_limits import RateLimit
from servicekit.settings import ServiceSettings

# The HMAC key of client addresses in the ledger, by name in the secrets
# directory. Here, not in the server, so dev-secrets learns it without
# importing the server.
IP_HASH_SECRET_FILE = "ip-hash.key"

DEFAULT_LIMITS = {
    # Sign calls from one client address: high, since a carrier NAT or a
    # campus puts thousands of people behind one address.
    "sign_ip": RateLimit(burst=300, per_minute=1200),
    # Sign calls of one person (across petitions and retries).
    "sign_signer": RateLimit(burst=30, per_minute=60),
}


class SigningSettings(ServiceSettings):
    grpc_address: str = "127.0.0.1:50062"
    metrics_port: int = 9162
    identity_address: str = "127.0.0.1:50061"
    # The tally's readers, asked for the stored signatures an invalidation
    # by IP hash or time window selects (signing has no Cassandra access).
    tally_address: str = "127.0.0.1:50063"
    # Longest wait for Kafka's acknowledgement before answering UNAVAILABLE;
    # the client may retry with the same idempotency key.
    publish_timeout_seconds: float = 10.0
    # While Kafka acknowledges nothing at all (its broker crashed or is
    # restarting), a send gives up after this long rather than the whole
    # publish timeout, so the caller gets UNAVAILABLE and retries well before
    # its own deadline (clients commonly give up after 10 s, the publish
    # timeout). A slow broker still acknowledges something and is waited for.
    # 2 s: the first produce of a broker just restarted on 2 busy cores took
    # 1.1 s, and it should not be given up on.
    publish_stall_seconds: float = 2.0
    # Signatures awaiting Kafka's acknowledgement at once; beyond this the
    # broker is not keeping up and new requests are shed with
    # RESOURCE_EXHAUSTED rather than queued without bound.
    max_in_flight: int = 5_000
    # How long the producer holds a partition's batch open for more Sign
    # calls. At a peak a few milliseconds fill batches of many signatures:
    # at 1,000 Sign/s, 5 ms instead of 2 halved the broker's CPU.
    producer_linger_ms: int = 5
    # How long after its petition closes a receipt is kept, so that a retry
    # (same idempotency key) still gets the first answer.
    idempotency_ttl_seconds: int = 24 * 3600
    grace_seconds: float = 10.0
    rate_limits: dict[str, RateLimit] = DEFAULT_LIMITS
    blocked_ip_networks: tuple[str, ...] = ()
