"""Dead-letter: a message that is no signature event goes to the
dead-letter topic with the reason, and the partition moves on; unless the
partition has had too many of them, when the fault is more likely ours (a
bad deploy, a wrong topic) than the messages'.

The limits are kept per partition: partitions are applied side by side, so
one counter for the process would add their runs up, and a good message of
one partition would end another's run."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import structlog

from services.tally.dead_letters import DeadLetterSink
from services.tally.steps.protocol import Batch, Forward, LogMessage, Step

log = structlog.get_logger()


class TooManyDeadLetters(Exception):
    """A partition is over a dead-letter limit: the worker stops (its
    process exits for the supervisor) with nothing of the batch committed,
    so a fixed deploy resumes at the batch."""


@dataclass
class _PartitionRun:
    next_offset: int
    in_row: int = 0
    # The last messages, True where dead-lettered (maxlen: the window).
    recent: deque[bool] = field(default_factory=deque)


class DeadLetterLimits:
    """Per partition: undecodable messages in a row (at most max_in_row),
    and their share of the last `window` messages (at most max_ratio)."""

    def __init__(self, max_in_row: int, max_ratio: float, window: int):
        self._max_in_row = max_in_row
        self._max_ratio = max_ratio
        self._window = window
        self._runs: dict[int, _PartitionRun] = {}

    def start(self, partition: int, first_offset: int) -> None:
        """A batch begins. One that does not follow the last one (a retry
        after a failure, a partition that came back after a rebalance)
        starts the count afresh rather than counting messages twice."""
        run = self._runs.get(partition)
        if run is None or run.next_offset != first_offset:
            self._runs[partition] = _PartitionRun(first_offset, recent=deque(maxlen=self._window))

    def record(self, message: LogMessage, dead: bool) -> str | None:
        """Counts the message; returns why the partition must stop when
        this dead letter puts it over a limit."""
        run = self._runs[message.partition]
        run.next_offset = message.offset + 1
        run.recent.append(dead)
        if not dead:
            run.in_row = 0
            return None
        run.in_row += 1
        if run.in_row > self._max_in_row:
            return f"{run.in_row} messages in a row could not be applied"
        dead_in_window = sum(run.recent)
        if len(run.recent) == self._window and dead_in_window > self._max_ratio * self._window:
            return f"{dead_in_window} of the last {self._window} messages could not be applied"
        return None


class DeadLetter(Forward):
    def __init__(self, sink: DeadLetterSink, limits: DeadLetterLimits, next_step: Step):
        super().__init__(next_step)
        self._sink = sink
        self._limits = limits

    async def submit(self, batch: Batch) -> None:
        self._limits.start(batch.partition.partition, batch.first_offset)
        for message, event in batch.decoded:
            over = self._limits.record(message, dead=isinstance(event, str))
            if over is not None:
                raise TooManyDeadLetters(
                    f"{over}; stopped at partition {message.partition} offset {message.offset}: {event}"
                )
            if isinstance(event, str):
                await self._sink.send(
                    message.topic, message.partition, message.offset, message.key, message.value, event
                )
                log.warning("dead-lettered", partition=message.partition, offset=message.offset, reason=event)
            else:
                batch.events.append((message, event))
        await self.next_step.submit(batch)
