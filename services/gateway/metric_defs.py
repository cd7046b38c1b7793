"""Every metric the gateway exposes, named once; labels are bounded (route
patterns, never a petition id or a person)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "petitions_gateway_http_requests_total",
    "HTTP requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "petitions_gateway_http_latency_seconds",
    "Time to answer an HTTP request (to the start of the stream for live tallies), by route pattern.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BACKEND_UP = Gauge(
    "petitions_gateway_backend_up",
    "1 when at least one connection to the backend reports SERVING, else 0.",
    ["backend"],
)
LIVE_CLIENTS = Gauge("petitions_gateway_live_clients", "Server-Sent Events streams open in this process.")
LIVE_FEEDS = Gauge(
    "petitions_gateway_live_feeds",
    "WatchTally streams this process holds open: one per petition that has live clients.",
)
TALLY_READS = Counter(
    "petitions_gateway_tally_reads_total",
    "GetTally calls made to fill the gateway's tally cache (the rest were served from it).",
)
