"""Tally's settings."""

from __future__ import annotations

from typing import Literal

from servicekit.settings import ServiceSettings


class TallySettings(ServiceSettings):
    grpc_address: str = "127.0.0.1:50063"
    # What this process does: "all" (one process, as on a laptop),
    # "consumer" (applies the log; serves health only) or "reader" (serves
    # GetTally and WatchTally only).
    role: Literal["all", "consumer", "reader"] = "all"
    metrics_port: int = 9163
    # Identity's keys, to check the staff credential SelectSignatures needs
    # (readers only).
    identity_address: str = "127.0.0.1:50061"
    consumer_group: str = "tally"
    # Messages taken from one partition at once; one Redis script and one round of
    # Cassandra writes per partition per batch.
    max_batch_messages: int = 2_000
    poll_timeout_ms: int = 200
    # The broker answers a fetch once it has this much, or after
    # fetch_max_wait_ms: at a steady peak the tally then takes a few large
    # batches a second instead of hundreds of tiny ones, each of which costs
    # a Redis script, Cassandra writes and an offset commit.
    fetch_min_bytes: int = 64 * 1024
    fetch_max_wait_ms: int = 100
    # Undecodable messages in a row after which the consumer stops (and its
    # process exits for its supervisor) instead of dead-lettering on.
    max_dead_letters_in_row: int = 1_000
    # Per partition too: the consumer also stops when more than this share
    # of a partition's last dead_letter_window messages were dead-lettered.
    max_dead_letter_ratio: float = 0.5
    dead_letter_window: int = 1_000
    # On stop and when partitions are revoked, how long the batches in flight
    # may take to finish and be committed before the consumer leaves the
    # group (what is not finished by then, the next owner replays).
    drain_seconds: float = 10.0
    # When a poll brings fewer than max_batch_messages, wait this long for
    # more: larger batches under moderate load, at this cost in latency.
    batch_linger_ms: int = 0
    # Concurrent Cassandra writes while applying one batch.
    cassandra_write_concurrency: int = 16
    # Rows per unlogged single-partition batch; about 3 KiB at 16, under
    # Cassandra's default batch_size_warn_threshold (5 KiB).
    cassandra_rows_per_batch: int = 16
    # How often a consumer announces threshold crossings recorded by a
    # worker that died before announcing them.
    threshold_sweep_seconds: float = 30.0
    lag_cache_seconds: float = 1.0
    # GetTally and WatchTally read a petition's counts at most this often per
    # process, however many readers there are (the rest get the cached read).
    tally_cache_seconds: float = 0.25
    # WatchTally pushes a changed tally at most this often.
    watch_interval_ms: int = 500
    # Open WatchTally streams per process; past it, RESOURCE_EXHAUSTED.
    max_watchers: int = 20_000
    grace_seconds: float = 5.0
