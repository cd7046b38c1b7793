"""Check thresholds: the petitions that gained signatures are checked
against their thresholds from the summed counters, not from the batch's
change, so a replayed batch whose counts were applied before a crash still
leads to the check and no crossing is missed."""

from __future__ import annotations

from services.tally.steps.protocol import Batch, Forward, Step
from services.tally.thresholds import ThresholdWatcher


class CheckThresholds(Forward):
    def __init__(self, watcher: ThresholdWatcher, next_step: Step):
        super().__init__(next_step)
        self._watcher = watcher

    async def submit(self, batch: Batch) -> None:
        await self._watcher.check(batch.signed_petitions)
        await self.next_step.submit(batch)
