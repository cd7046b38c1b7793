"""The Prometheus scrape endpoint of a service."""

from __future__ import annotations

from prometheus_client import start_http_server


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serves /metrics from a background thread; port 0 disables it."""
    if port:
        start_http_server(port, addr=host)
