"""Every metric tally exposes, named once; labels are bounded (no petition
id, no person)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPLIED = Counter("petitions_tally_messages_applied_total", "Signature-log messages applied.", ["kind"])
BATCH_SECONDS = Histogram(
    "petitions_tally_batch_seconds",
    "Time to apply one partition's batch (Cassandra and Redis).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_FAILURES = Counter(
    "petitions_tally_batch_failures_total", "Batches that failed to apply and will be retried.", ["error"]
)
DEAD_LETTERED = Counter("petitions_tally_dead_letters_total", "Messages sent to the dead-letter topic.")
WATCHERS = Gauge("petitions_tally_watchers", "WatchTally streams open in this process.")
WATCHED_PETITIONS = Gauge(
    "petitions_tally_watched_petitions", "Petitions with at least one watcher (one upstream read each per interval)."
)
SHARD_REBUILDS = Counter(
    "petitions_tally_shard_rebuilds_total", "Shards rebuilt from Cassandra after Redis lost their state."
)
