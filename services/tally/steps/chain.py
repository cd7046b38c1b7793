"""The tally consumer's chain, composed in one place, top to bottom."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from aiokafka import AIOKafkaConsumer

from services.tally.archive import SignatureArchive
from services.tally.counters import ShardedCounters
from services.tally.dead_letters import DeadLetterSink
from services.tally.recovery import ShardRecovery
from services.tally.steps.archive import Archive
from services.tally.steps.commit import Commit, Progress
from services.tally.steps.count import Count
from services.tally.steps.dead_letter import DeadLetter, DeadLetterLimits
from services.tally.steps.decode import Decode
from services.tally.steps.in_flight import InFlight
from services.tally.steps.protocol import Step
from services.tally.steps.thresholds import CheckThresholds
from services.tally.thresholds import ThresholdWatcher


@dataclass(frozen=True)
class ChainParts:
    consumer: AIOKafkaConsumer
    dead_letters: DeadLetterSink
    limits: DeadLetterLimits
    archive: SignatureArchive
    counters: ShardedCounters
    recovery: ShardRecovery
    thresholds: ThresholdWatcher
    progress: Progress


def tally_chain(parts: ChainParts) -> InFlight:
    """Every step a partition's batch goes through, in order. The order is
    what makes the tally exact: on record in Cassandra before counted in
    Redis, counted before thresholds are checked, all of it before the
    offsets are committed."""
    return InFlight(
        parts.consumer,
        link(
            Decode,
            partial(DeadLetter, parts.dead_letters, parts.limits),
            partial(Archive, parts.archive),
            partial(Count, parts.counters, parts.recovery),
            partial(CheckThresholds, parts.thresholds),
            last=Commit(parts.consumer, parts.progress),
        ),
    )


def link(*steps: Callable[[Step], Step], last: Step) -> Step:
    """Chains steps, each given the one after it as its next step."""
    chained = last
    for step in reversed(steps):
        chained = step(chained)
    return chained
