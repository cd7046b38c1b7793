"""Thresholds with legal effect: each crossed exactly once, the territorial
rule only when both of its conditions hold, announced on petition-events."""

from __future__ import annotations

import uuid

import pytest

from petitions.v1 import events_pb2, petition_pb2
from servicekit import territories
from servicekit.petition_view import ViewThreshold as Threshold
from services.tally.counters import Totals
from services.tally.thresholds import crossed
from tests.system import SystemClient
from tests.tally_workers import Ledger, LogPublisher, new_signer

COMMITTEE = Threshold("committee", "Sent to a committee", 100_000)
FLOOR = Threshold("floor", "May be debated in plenary", 500_000, min_territories=30)


def totals(total: int, count: int) -> Totals:
    """Totals spread over the first `count` real territories."""
    codes = territories.codes()[:count]
    assert len(codes) == count
    return Totals(total, {code: total // max(count, 1) for code in codes}, {"FR": total})


@pytest.mark.parametrize(
    ("total", "territories", "already", "expected"),
    [
        (99_999, 40, set(), []),
        (100_000, 1, set(), ["committee"]),
        (600_000, 29, set(), ["committee"]),
        (500_000, 30, set(), ["committee", "floor"]),
        (500_000, 30, {"committee"}, ["floor"]),
        (2_000_000, 101, {"committee", "floor"}, []),
    ],
)
def test_the_assemblee_nationale_rules(total: int, territories: int, already: set[str], expected: list[str]) -> None:
    assert [t.id for t in crossed((COMMITTEE, FLOOR), totals(total, territories), already)] == expected


def test_zero_count_territories_do_not_count_towards_the_rule() -> None:
    codes = territories.codes()
    emptied = Totals(500_000, {**{c: 20_000 for c in codes[:25]}, **{c: 0 for c in codes[25:35]}}, {})
    assert [t.id for t in crossed((FLOOR,), emptied, set())] == []


# Codes a counter may hold that are no territory: "20" (Corse before 1976),
# a value with a trailing newline, made-up codes.
NOT_TERRITORIES = ("20", "00", "75\n", "2a", "x1", "96")


def test_only_real_territories_count_towards_the_rule() -> None:
    codes = territories.codes()
    padded = Totals(500_000, {**{c: 10_000 for c in codes[:29]}, **{c: 10_000 for c in NOT_TERRITORIES}}, {})
    assert [t.id for t in crossed((FLOOR,), padded, set())] == []

    real = Totals(500_000, {**padded.by_territory, codes[29]: 10_000}, {})
    assert [t.id for t in crossed((FLOOR,), real, set())] == ["floor"]


@pytest.mark.stack
def test_a_counted_code_that_is_no_territory_does_not_cross_a_territorial_rule(system: SystemClient) -> None:
    petition = system.create_petition(
        "Three places, two of them real",
        thresholds=[
            petition_pb2.Threshold(id="three-places", label="From three territories", signatures=3, min_territories=3),
            petition_pb2.Threshold(id="two-places", label="From two territories", signatures=3, min_territories=2),
        ],
    )
    # Straight onto the log, as an older identity (before the reference
    # list) could have let "20" through: counted, but no territory.
    ledger = Ledger()
    publisher = LogPublisher(system.stack, system.signatures_topic)
    try:
        records = [ledger.accepted(petition.id, new_signer(), code, "FR") for code in ("13", "20", "75")]
        assert publisher.publish(records) == 3
    finally:
        publisher.close()

    tally = system.settled_tally(petition.id)
    assert (tally.total, dict(tally.by_territory)) == (3, {"13": 1, "20": 1, "75": 1})
    # "three-places" comes first in the petition, so it would have been
    # recorded before "two-places" in the same check.
    assert [t.threshold_id for t in tally.thresholds_reached] == ["two-places"]
    [row] = system.cassandra.execute(
        "SELECT territories FROM thresholds_reached WHERE petition_id = %s", (petition.id,)
    )
    assert row.territories == 2


@pytest.mark.stack
def test_crossings_are_recorded_once_and_announced(system: SystemClient) -> None:
    petition = system.create_petition(
        "Small thresholds",
        thresholds=[
            petition_pb2.Threshold(id="three", label="Three signatures", signatures=3),
            petition_pb2.Threshold(id="spread", label="Four from two territories", signatures=4, min_territories=2),
        ],
    )
    for _ in range(4):
        system.sign(system.credential(f"th-{uuid.uuid4().hex[:8]}", territory="13").token, petition.id)
    tally = system.settled_tally(petition.id)
    assert [t.threshold_id for t in tally.thresholds_reached] == ["three"]

    system.sign(system.credential(f"th-{uuid.uuid4().hex[:8]}", territory="75").token, petition.id)
    system.sign(system.credential(f"th-{uuid.uuid4().hex[:8]}", territory="75").token, petition.id)
    tally = system.settled_tally(petition.id)
    reached = {t.threshold_id: t.count for t in tally.thresholds_reached}
    assert set(reached) == {"three", "spread"}
    assert reached["three"] >= 3
    assert reached["spread"] >= 5

    topic = f"{system.namespace.topic_prefix}petition-events"
    announced = [
        events_pb2.PetitionEvent.FromString(r.value).threshold_reached.threshold_id
        for r in system.records_with_key(petition.id.encode(), topic=topic)
        if events_pb2.PetitionEvent.FromString(r.value).WhichOneof("event") == "threshold_reached"
    ]
    assert sorted(announced) == ["spread", "three"]
