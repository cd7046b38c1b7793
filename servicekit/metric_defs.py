"""Metrics every gRPC service exposes. Service-specific metrics live in each
service's own metrics module; labels here are bounded (method and code)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RPC_REQUESTS = Counter(
    "petitions_rpc_requests_total",
    "gRPC requests handled, by method and status code.",
    ["method", "code"],
)
RPC_LATENCY = Histogram(
    "petitions_rpc_latency_seconds",
    "gRPC handling time, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RATE_LIMITED = Counter(
    "petitions_rate_limited_total", "Requests refused by a rate limit or block list, by scope.", ["scope"]
)
