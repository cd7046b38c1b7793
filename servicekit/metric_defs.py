"""Metrics every gRPC service exposes. Service-specific metrics live in each
service's own metrics module; labels here are bounded (method and code)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# The petition view (servicekit/petition_view.py) of signing and tally.
PETITION_VIEW_RECORDS = Counter(
    "petitions_petition_view_records_total",
    "Petition-state records folded into the view, by outcome: applied, removed (a tombstone), stale (an older"
    " version than the one held, ignored) or skipped (undecodable, logged).",
    ["outcome"],
)
PETITION_VIEW_PETITIONS = Gauge("petitions_petition_view_petitions", "Petitions the view holds.")
PETITION_VIEW_AGE = Gauge(
    "petitions_petition_view_age_seconds",
    "Seconds since the view last knew it held everything the petition-state topic held (grows while Kafka is"
    " unreachable; the view keeps serving what it has).",
)
PETITION_VIEW_CAUGHT_UP = Gauge(
    "petitions_petition_view_caught_up", "1 once the view has read the whole petition-state topic at start."
)
