"""Exactly once, whatever happens to the tally workers: kill -9 in the middle
of a flood, two workers rebalancing while they consume, Redis flushed under
them. Every time the live tally, the stored rows and the recount agree with
what the test published: each person once per petition, where their first
signature says, unless invalidated.

Each test runs tally workers of its own on a log of its own (see
tests/tally_workers.py); the session's tally is left alone.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from petitions.v1 import events_pb2, petition_pb2
from tests.system import SystemClient
from tests.tally_workers import (
    Ledger,
    PrivateTally,
    Traffic,
    mixed_traffic,
    new_signer,
    repeats,
    stored_totals,
    totals_of_tally,
)
from tests.waiting import eventually

pytestmark = pytest.mark.stack

TERRITORIES = ("75", "13", "69", "33", "59", "2A", "971", "31", "44", "67")
COUNTRIES = ("FR", "FR", "FR", "FR", "FR", "FR", "BE", "DE", "ES", "CA")
TRAFFIC = Traffic(TERRITORIES, COUNTRIES)
# A territory heard from only in the last signatures published: the
# territorial threshold cannot be crossed before one of them is applied.
LATE_TERRITORY = "976"


def seeded() -> random.Random:
    seed = random.randrange(2**32)
    print(f"random seed: {seed}")
    return random.Random(seed)


def petition_ids(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"t-{run}-{n}" for n in range(count)]


def assert_counted_exactly(tally: PrivateTally, ledger: Ledger, ids: Sequence[str]) -> None:
    """The live tally (GetTally from a live worker) and the stored rows both
    say what the ledger says, and the recount finds no difference."""
    worker = next(w for w in reversed(tally.workers) if w.alive)
    flushed = tally.foreign_flushes()
    note = f" (another test session flushed Redis {flushed} times meanwhile)" if flushed else ""
    for petition_id in ids:
        expected = ledger.expected(petition_id)
        assert totals_of_tally(tally.tally(petition_id, worker)) == expected, petition_id + note
        assert stored_totals(tally.system, petition_id) == expected, petition_id
    code, output = tally.recount(*ids)
    assert code == 0, output
    for petition_id in ids:
        assert f"{petition_id}: {ledger.expected(petition_id).total} signatures, no difference" in output


def announced_contents(announcements: Sequence[events_pb2.ThresholdReached]) -> dict[str, set[tuple[int, int, int]]]:
    """Each announced threshold's distinct contents: count, territories,
    reached_at in nanoseconds."""
    contents: dict[str, set[tuple[int, int, int]]] = {}
    for a in announcements:
        contents.setdefault(a.threshold_id, set()).add((a.count, a.territories, a.reached_at.ToNanoseconds()))
    return contents


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killing_the_worker_three_times_counts_each_person_once(system: SystemClient, tmp_path: Path) -> None:
    rng = seeded()
    ids = petition_ids(12)
    hot = ids[0]
    ledger = Ledger()
    records = list(mixed_traffic(ledger, rng, ids, TRAFFIC, 50_000 - 25))
    records += [ledger.accepted(hot, new_signer(), LATE_TERRITORY, "FR") for _ in range(25)]
    assert len(records) == ledger.messages == 50_000

    # Thresholds from what will be published: two that must be crossed (one
    # only once the late territory shows), two that never can be (each
    # missing one of its two conditions).
    final = ledger.expected(hot)
    territories = len(final.by_territory)
    must = {
        "half": (final.total // 2, 0),
        "everywhere": (final.total // 2, territories),
    }
    never = {
        "one-too-many-territories": (1, territories + 1),
        "more-than-ever-signed": (ledger.distinct_signers(hot) + 1, 1),
    }
    system.create_petition(
        "Flooded while its tally crashes",
        id=hot,
        thresholds=[
            petition_pb2.Threshold(id=name, label=name, signatures=signatures, min_territories=minimum)
            for name, (signatures, minimum) in (must | never).items()
        ],
    )
    for petition_id in ids[1:]:
        system.create_petition("In the tail", id=petition_id)

    tally = PrivateTally(system, "eo", tmp_path)
    tally.migrate()
    publisher = tally.publisher()
    try:
        worker = tally.start_worker()
        # The last tenth is published only after the last kill: a worker
        # catching up commits a whole batch at once, so with everything
        # published its committed offset could leap past the last kill point
        # to the end, and that kill would hit an idle worker.
        held_back = int(0.9 * len(records))
        publisher.start(records[:held_back], chunk=2_000)
        killed_at: list[int] = []
        for low, high in ((0.1, 0.3), (0.4, 0.6), (0.65, 0.85)):
            point = int(rng.uniform(low, high) * len(records))
            tally.wait_committed(point, timeout=90)
            killed_at.append(tally.committed())
            worker.kill()
            worker = tally.start_worker()
        assert publisher.join() + publisher.publish(records[held_back:]) == len(records)
        tally.wait_applied(timeout=120)
        assert all(at < len(records) for at in killed_at), f"killed after the end: {killed_at}"

        assert_counted_exactly(tally, ledger, ids)

        reached = {
            row.threshold_id: row
            for row in system.cassandra.execute(
                "SELECT threshold_id, count, territories, published FROM thresholds_reached WHERE petition_id = %s",
                (hot,),
            )
        }
        assert set(reached) == set(must)
        for name, (signatures, minimum) in must.items():
            # Both conditions held at the moment the crossing was recorded.
            assert reached[name].count >= signatures
            assert reached[name].territories >= minimum
            assert reached[name].published
        assert {t.threshold_id for t in tally.tally(hot, worker).thresholds_reached} == set(must)

        announced = announced_contents(tally.announcements(hot))
        assert set(announced) == set(reached)
        for name, row in reached.items():
            # At least once; a repeat says exactly what the first one said.
            assert len(announced[name]) == 1, f"{name} announced differently: {announced[name]}"
            count, territories, _ = next(iter(announced[name]))
            assert (count, territories) == (row.count, row.territories)
    finally:
        publisher.close()
        tally.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_workers_rebalancing_count_each_person_once(system: SystemClient, tmp_path: Path) -> None:
    rng = seeded()
    hot = system.create_petition("One petition, every partition, every worker").id
    ledger = Ledger()
    # Small batches under a steady flow: many batches and commits in flight
    # while the group rebalances around them.
    tally = PrivateTally(system, "rb", tmp_path, PETITIONS_MAX_BATCH_MESSAGES="250")
    tally.migrate()
    publisher = tally.publisher()
    applied_by: dict[str, float] = {}
    try:
        first = tally.start_worker()
        # The flow lasts until the rebalancing is over; the cap only bounds it.
        publisher.start(mixed_traffic(ledger, rng, [hot], TRAFFIC, 30_000), chunk=250, pause_seconds=0.1)
        eventually(lambda: tally.applied(first) > 0, 30, interval=0.2, message=f"{first.name} applying")
        second = tally.start_worker()
        eventually(lambda: tally.applied(second) > 0, 60, interval=0.2, message=f"{second.name} applying after joining")
        applied_by[first.name] = tally.applied(first)
        assert first.stop() == 0, f"{first.name} did not drain cleanly:\n{first.service.log_tail()}"
        third = tally.start_worker()
        eventually(lambda: tally.applied(third) > 0, 60, interval=0.2, message=f"{third.name} applying after joining")
        eventually(lambda: ledger.messages >= 8_000, 60, interval=0.2, message="8,000 messages published")
        publisher.stop()
        assert publisher.join() == ledger.messages
        tally.wait_applied(timeout=60)
        for worker in (second, third):
            assert worker.alive, f"{worker.name} died while the group rebalanced:\n{worker.service.log_tail()}"
            applied_by[worker.name] = tally.applied(worker)

        assert_counted_exactly(tally, ledger, [hot])
        shards = tally.shard_totals(hot)
        assert all(count > 0 for count in shards.values()), shards
        assert sum(shards.values()) == ledger.expected(hot).total
        assert all(count > 0 for count in applied_by.values()), applied_by
        print(f"{ledger.messages} messages; applied by worker: {applied_by}; valid by partition: {shards}")
    finally:
        publisher.close()
        tally.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_outlives_a_rebalance_in_the_middle_of_a_batch(system: SystemClient, tmp_path: Path) -> None:
    """A worker that joins takes partitions from one that is still applying
    a batch of them: the latter's commit of those partitions must fail
    harmlessly (the new owner replays them), not end the process."""
    rng = seeded()
    hot = system.create_petition("Rebalanced mid-batch").id
    ledger = Ledger()
    # One row per Cassandra request, one request at a time: a slow store, so
    # that each batch takes long enough for the group to rebalance during it.
    tally = PrivateTally(
        system, "mb", tmp_path, PETITIONS_CASSANDRA_WRITE_CONCURRENCY="1", PETITIONS_CASSANDRA_ROWS_PER_BATCH="1"
    )
    tally.migrate()
    publisher = tally.publisher()
    try:
        first = tally.start_worker()
        assert publisher.publish(mixed_traffic(ledger, rng, [hot], TRAFFIC, 12_000)) == ledger.messages
        eventually(lambda: tally.applied(first) > 0, 30, interval=0.2, message=f"{first.name} applying")
        second = tally.start_worker()
        eventually(lambda: tally.applied(second) > 0, 60, interval=0.2, message=f"{second.name} applying after joining")
        tally.wait_applied(timeout=90)
        assert first.alive, f"{first.name} died when {second.name} joined:\n{first.service.log_tail()}"
        assert_counted_exactly(tally, ledger, [hot])
    finally:
        publisher.close()
        tally.stop_all()


@pytest.mark.timeout(120)
def test_an_announcement_repeated_after_a_crash_says_the_same(system: SystemClient, tmp_path: Path) -> None:
    """ThresholdReached is at least once: a crash after Kafka acknowledged it
    but before the record was marked published makes the next worker
    announce it again. Consumers key on petition and threshold, so the
    repeat must say exactly what the first announcement said."""
    rng = seeded()
    petition = system.create_petition(
        "Announced twice", thresholds=[petition_pb2.Threshold(id="three", label="Three", signatures=3)]
    )
    ledger = Ledger()
    tally = PrivateTally(system, "an", tmp_path)
    tally.migrate()
    publisher = tally.publisher()
    try:
        worker = tally.start_worker()
        publisher.publish(mixed_traffic(ledger, rng, [petition.id], TRAFFIC, 10))
        tally.wait_applied(timeout=30)
        # Announced before the batch was committed.
        before = tally.announcements(petition.id)
        assert {a.threshold_id for a in before} == {"three"}

        # What such a crash leaves behind: the event in Kafka, the record unmarked.
        system.cassandra.execute(
            "UPDATE thresholds_reached SET published = false WHERE petition_id = %s AND threshold_id = 'three'",
            (petition.id,),
        )
        worker.kill()
        tally.start_worker()
        eventually(
            lambda: len(tally.announcements(petition.id)) > len(before),
            30,
            interval=0.2,
            message="the announcement repeated",
        )

        announced = announced_contents(tally.announcements(petition.id))
        assert len(announced["three"]) == 1, f"announced differently: {announced['three']}"
    finally:
        publisher.close()
        tally.stop_all()


@pytest.mark.destructive
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_flushed_mid_run_is_rebuilt_exactly(system: SystemClient, tmp_path: Path) -> None:
    rng = seeded()
    ids = petition_ids(4)
    for petition_id in ids:
        system.create_petition("Counted through a Redis loss", id=petition_id)
    ledger = Ledger()
    records = list(mixed_traffic(ledger, rng, ids, TRAFFIC, 8_000))
    tally = PrivateTally(system, "fl", tmp_path)
    tally.migrate()
    publisher = tally.publisher()
    try:
        tally.start_worker()
        publisher.start(records, chunk=250, pause_seconds=0.05)
        tally.wait_committed(len(records) // 3, timeout=60)
        tally.flush_redis()
        flushed_at = tally.committed()
        publisher.join()
        tally.wait_applied(timeout=60)
        assert flushed_at < len(records), "Redis was flushed after the worker had applied everything"

        code, output = tally.recount("--repair", *ids)
        assert code == 0, output
        assert_counted_exactly(tally, ledger, ids)

        # Everyone signs again, invalidated people too: nobody counts twice.
        before = {petition_id: ledger.expected(petition_id) for petition_id in ids}
        again = list(repeats(ledger, rng, ids, TRAFFIC))
        assert publisher.publish(again) == len(again)
        tally.wait_applied(timeout=60)
        assert {petition_id: ledger.expected(petition_id) for petition_id in ids} == before
        assert_counted_exactly(tally, ledger, ids)
    finally:
        publisher.close()
        tally.stop_all()
