"""Tally's metrics tell an operator what the counting does: batches,
duplicates dropped, thresholds crossed, and how far behind the log it is."""

from __future__ import annotations

import uuid

import pytest

from petitions.v1 import events_pb2, petition_pb2
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = pytest.mark.stack


def test_counting_is_visible_in_the_metrics(system: SystemClient) -> None:
    petition = system.create_petition(
        "Measured", thresholds=[petition_pb2.Threshold(id="two", label="Two signatures", signatures=2)]
    )
    # What earlier tests left in the log is applied before the baseline.
    system.settled_tally(petition.id)
    before = {
        name: system.metric_value("tally", name)
        for name in (
            "petitions_tally_duplicates_dropped_total",
            "petitions_tally_thresholds_crossed_total",
            "petitions_tally_batch_messages_count",
        )
    }
    receipts = [system.sign(system.credential(f"m-{uuid.uuid4().hex[:8]}").token, petition.id) for _ in range(2)]
    # The log replays one accepted signature, as a retrying producer might.
    replayed = system.read_record(receipts[0].position.partition, receipts[0].position.offset)
    system.publish_raw(replayed.key, events_pb2.SignatureEvent.FromString(replayed.value))

    assert system.settled_tally(petition.id).total == 2
    assert system.metric_value("tally", "petitions_tally_duplicates_dropped_total") == (
        before["petitions_tally_duplicates_dropped_total"] + 1
    )
    assert system.metric_value("tally", "petitions_tally_thresholds_crossed_total") == (
        before["petitions_tally_thresholds_crossed_total"] + 1
    )
    assert (
        system.metric_value("tally", "petitions_tally_batch_messages_count")
        > (before["petitions_tally_batch_messages_count"])
    )
    partitions = len(system.end_offsets())

    def lag_series() -> list[str]:
        return [
            line
            for line in system.metrics("tally").splitlines()
            if line.startswith("petitions_tally_consumer_lag_messages{")
        ]

    # A consumer that an earlier test started in the session's group hands
    # its partitions back only at the session tally's next heartbeat (up
    # to 3 s after it left): wait for the group to have settled.
    def settled_lag() -> list[str] | None:
        series = lag_series()
        return series if len(series) == partitions else None

    lag = eventually(
        settled_lag,
        20,
        message=lambda: f"a lag series per partition: {lag_series()}",
    )
    assert all(line.endswith(" 0.0") for line in lag), lag
    assert system.metric_value("tally", "petitions_tally_lag_seconds") == 0.0
