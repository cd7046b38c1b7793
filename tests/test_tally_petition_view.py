"""Tally learns petitions from its petition view: a petition's thresholds
come from its state on the petition-state topic, and a batch applied before
the view knew the petition (it was created a moment before its first
signatures) still leads to the threshold check."""

from __future__ import annotations

import uuid

import grpc
import pytest

from petitions.v1 import petition_pb2, tally_pb2
from tests.errors import rejection
from tests.system import SystemClient
from tests.tally_workers import Ledger, LogPublisher, new_signer
from tests.waiting import eventually

pytestmark = pytest.mark.stack


def reached(system: SystemClient, petition_id: str) -> tally_pb2.PetitionTally | None:
    tally = system.get_tally(petition_id)
    return tally if tally.thresholds_reached else None


def test_signatures_counted_before_the_view_knew_their_petition_still_cross_its_threshold(
    system: SystemClient,
) -> None:
    petition_id = f"late-{uuid.uuid4().hex[:10]}"
    # Straight onto the log, before the petition exists anywhere: the tally
    # applies them while its view does not hold the petition, as it would a
    # batch that overtook the petition's creation.
    ledger = Ledger()
    publisher = LogPublisher(system.stack, system.signatures_topic)
    try:
        assert publisher.publish([ledger.accepted(petition_id, new_signer(), "75", "FR") for _ in range(2)]) == 2
    finally:
        publisher.close()
    eventually(system.applied_everything, 60, interval=0.2, message="tally has not applied the whole log")
    with pytest.raises(grpc.RpcError) as raised:
        system.get_tally(petition_id)
    assert rejection(raised.value).reason == "PETITION_NOT_FOUND"

    system.create_petition(
        "Created after its first signatures",
        id=petition_id,
        thresholds=[petition_pb2.Threshold(id="two", label="Two signatures", signatures=2)],
    )
    # No more signatures arrive: only the recheck of petitions the view
    # learnt late can record the crossing.
    tally = eventually(
        lambda: reached(system, petition_id), 10, interval=0.1, message="the threshold was never recorded"
    )
    assert tally.total == 2
    assert [(t.threshold_id, t.count) for t in tally.thresholds_reached] == [("two", 2)]
