"""Thresholds with legal effect: each crossed exactly once, the territorial
rule only when both of its conditions hold, announced on petition-events."""

from __future__ import annotations

import uuid

import pytest

from petitions.v1 import events_pb2, petition_pb2
from services.catalogue.model import Threshold
from services.tally.counters import Totals
from services.tally.thresholds import crossed
from tests.system import SystemClient

COMMITTEE = Threshold("committee", "Sent to a committee", 100_000)
FLOOR = Threshold("floor", "May be debated in plenary", 500_000, min_territories=30)


def totals(total: int, territories: int) -> Totals:
    return Totals(total, {f"{i:02d}": total // max(territories, 1) for i in range(territories)}, {"FR": total})


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
    emptied = Totals(500_000, {**{f"{i:02d}": 20_000 for i in range(25)}, **{f"x{i}": 0 for i in range(10)}}, {})
    assert [t.id for t in crossed((FLOOR,), emptied, set())] == []


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
