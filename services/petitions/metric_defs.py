"""Every metric the petitions service exposes beyond servicekit's RPC
metrics, named once. Labels are bounded: actions and roles come from the
state machine's fixed lists, never a petition id or a person."""

from __future__ import annotations

from prometheus_client import Counter

CHANGES = Counter(
    "petitions_petitions_changes_total",
    "Changes made to petitions (one conditional write each), by action (lifecycle.Action) and the role acted in.",
    ["action", "role"],
)
CHANGE_CONFLICTS = Counter(
    "petitions_petitions_change_conflicts_total",
    "Conditional writes that lost to a concurrent change and were decided again on the fresh state.",
)
EVENTS_NOT_PUBLISHED = Counter(
    "petitions_petition_events_not_published_total",
    "Changes whose audit entry or events did not reach Cassandra and Kafka at once: kept in the petition's"
    " outbox, finished by the sweeper.",
)
OUTBOX_FINISHED = Counter(
    "petitions_petitions_outbox_finished_total",
    "Changes left in an outbox that the sweeper (or the next change) published.",
)
