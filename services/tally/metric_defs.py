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
BATCH_MESSAGES = Histogram(
    "petitions_tally_batch_messages",
    "Messages in one partition's batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
DUPLICATES_DROPPED = Counter(
    "petitions_tally_duplicates_dropped_total", "Accepted signatures not counted: the person had already signed."
)
THRESHOLDS_CROSSED = Counter(
    "petitions_tally_thresholds_crossed_total", "Threshold crossings recorded (each exactly once across workers)."
)
# Partition labels are bounded by the topic's partition count.
CONSUMER_LAG = Gauge(
    "petitions_tally_consumer_lag_messages",
    "Messages in the log not yet applied, per partition this process consumes.",
    ["partition"],
)
LAG_SECONDS = Gauge(
    "petitions_tally_lag_seconds",
    "How far behind the log this process is: age of the last applied message on a partition that has more"
    " waiting (0 when caught up).",
)
