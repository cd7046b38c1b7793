"""The signatures topic's real partition count, checked against
`signature_partitions` by every process that reads the tally's shards
(the tally at start, `petitions recount`).

The count is part of the data's layout, not a tuning knob: the tally's
shards in Redis and Cassandra are the topic's partitions, and Kafka maps a
signature's key to a partition by the count. A process that believed in
another count would sum too few shards, or recount too few, and a topic
whose partitions were added to sends a person's next signature to another
partition, whose signer set has never seen them. So a mismatch is refused
at start, naming both numbers, rather than adapted to.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from servicekit.settings import CommonSettings
from servicekit.stores import kafka_options, start_kafka_client

# Kafka's UNKNOWN_TOPIC_OR_PARTITION.
_UNKNOWN_TOPIC = 3


class SignaturePartitionsMismatch(SystemExit):
    """The topic is missing or has another partition count than the
    settings say: a start-up error with what to do."""


async def signature_partition_count(settings: CommonSettings) -> int | None:
    """How many partitions the signatures topic has; None if it does not exist."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=30_000)
    await start_kafka_client(admin, settings, "admin client")
    try:
        # Every topic's metadata: asking for the one topic by name could
        # create it with the broker's defaults where auto-creation is on.
        described = await admin.describe_topics()
    finally:
        await admin.close()
    for topic in described:
        if topic["topic"] == settings.signatures_topic and topic["error_code"] != _UNKNOWN_TOPIC:
            return len(topic["partitions"])
    return None


async def check_signature_partitions(settings: CommonSettings, who: str) -> int:
    """The topic's partition count, once it is known to equal
    settings.signature_partitions; else SignaturePartitionsMismatch."""
    count = await signature_partition_count(settings)
    topic, expected = settings.signatures_topic, settings.signature_partitions
    if count is None:
        raise SignaturePartitionsMismatch(
            f"{who}: the signatures topic {topic!r} does not exist on {settings.kafka_bootstrap};"
            " run `petitions migrate` first"
        )
    if count != expected:
        raise SignaturePartitionsMismatch(
            f"{who}: the signatures topic {topic!r} has {count} partitions, but PETITIONS_SIGNATURE_PARTITIONS"
            f" is {expected}: the tally's shards are the topic's partitions. Set PETITIONS_SIGNATURE_PARTITIONS"
            f"={count} (a live topic's partitions must not be added to: a person's next signature would go to"
            " a partition that never saw them, and count twice)"
        )
    return count
