"""Every metric signing exposes beyond servicekit's RPC metrics, named once.
Labels are bounded: no petition id, no person, no free text."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SIGN_OUTCOMES = Counter(
    "petitions_signing_sign_outcomes_total",
    "Sign requests decided by the intake, by reason: accepted, accepted_replay (a retry with the same"
    " idempotency key, answered from the ledger), already_signed, the DomainError reason of a refusal,"
    " or failed (an unexpected error).",
    ["reason"],
)
# The reasons the intake can refuse a signature with. A reason outside this
# list (a new one added without updating it) is counted as OTHER, so the
# label stays bounded whatever the code raises.
SIGN_REFUSAL_REASONS = frozenset(
    {
        "INVALID_FIELD",
        "BLOCKED",
        "RATE_LIMITED",
        "CREDENTIAL_REJECTED",
        "IDENTITY_UNAVAILABLE",
        "PETITION_NOT_FOUND",
        "PETITION_NOT_OPEN",
        "NOT_ELIGIBLE",
        "LEDGER_UNAVAILABLE",
        "SIGNATURE_IN_PROGRESS",
        "OVERLOADED",
        "BROKER_UNAVAILABLE",
    }
)
OTHER_REASON = "OTHER"
SIGN_ACCEPTED = "accepted"
SIGN_ACCEPTED_REPLAY = "accepted_replay"
SIGN_ALREADY_SIGNED = "already_signed"
# Not a refusal: something raised that is not part of the API (a bug, or a
# store failure nobody mapped), which the client sees as UNKNOWN.
SIGN_FAILED = "failed"

PUBLISHES_IN_FLIGHT = Gauge(
    "petitions_signing_publishes_in_flight",
    "Signature-log events sent to Kafka and not yet acknowledged or failed.",
)
PUBLISH_ACK_SECONDS = Histogram(
    "petitions_signing_publish_ack_seconds",
    "Time from sending a signature-log event to Kafka's acks=all acknowledgement (acknowledged sends only).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# aiokafka does not report the size of the batches it sends, so this is not
# a batch size: it is how many other sends were awaiting acknowledgement when
# one more was sent, i.e. how many it could at most share a batch with.
SENDS_AWAITING_ACK = Histogram(
    "petitions_signing_sends_awaiting_ack",
    "Signature-log events already awaiting Kafka's acknowledgement when another is sent"
    " (an upper bound on what it can share a producer batch with; aiokafka does not expose batch sizes).",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
PUBLISH_FAILURES = Counter(
    "petitions_signing_publish_failures_total",
    "Signature-log events Kafka did not acknowledge, by cause: timeout (no answer in time), stalled"
    " (given up early: Kafka had acknowledged nothing for publish_stall_seconds) or refused.",
    ["cause"],
)


def sign_refusal_label(reason: str) -> str:
    """The reason label for a refused Sign: the DomainError reason when it is
    a known one, else OTHER."""
    return reason if reason in SIGN_REFUSAL_REASONS else OTHER_REASON


# Every series exists from the start, at zero, so that rate() and ratios over
# them are defined before the first occurrence.
for _reason in (
    SIGN_ACCEPTED,
    SIGN_ACCEPTED_REPLAY,
    SIGN_ALREADY_SIGNED,
    SIGN_FAILED,
    OTHER_REASON,
    *SIGN_REFUSAL_REASONS,
):
    SIGN_OUTCOMES.labels(_reason)
for _cause in ("timeout", "refused"):
    PUBLISH_FAILURES.labels(_cause)
