"""The signatures topic's partition count comes from settings
(PETITIONS_SIGNATURE_PARTITIONS): migrate creates the topic with it, a tally
on a topic of 4 partitions counts every signature once over 4 shards, and
a tally or a recount told another count than the topic's refuses to start,
naming both (servicekit/signature_topic.py says why it does not adapt)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from tests.harness import free_port, run_cli, start_service
from tests.system import SystemClient
from tests.tally_workers import Ledger, PrivateTally, Traffic, mixed_traffic, stored_totals, totals_of_tally
from tests.waiting import eventually

pytestmark = pytest.mark.stack

TRAFFIC = Traffic(territories=("75", "13", "69", "2A", "971"), countries=("FR", "FR", "FR", "BE", "DE"))


def test_a_tally_on_a_topic_of_four_partitions_counts_every_signature_once(
    system: SystemClient, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    ids = [f"p4-{run}-{n}" for n in range(3)]
    for petition_id in ids:
        system.create_petition("Counted over four shards", id=petition_id)
    tally = PrivateTally(system, "p4", tmp_path, PETITIONS_SIGNATURE_PARTITIONS="4")
    tally.migrate()
    assert sorted(system.end_offsets(tally.signatures_topic)) == [0, 1, 2, 3]

    seed = random.randrange(2**32)
    print(f"random seed: {seed}")
    ledger = Ledger()
    records = list(mixed_traffic(ledger, random.Random(seed), ids, TRAFFIC, 3_000))
    worker = tally.start_worker()
    publisher = tally.publisher()
    try:
        assert publisher.publish(records) == len(records)
        tally.wait_applied(timeout=120)
        for petition_id in ids:
            expected = ledger.expected(petition_id)
            assert totals_of_tally(tally.tally(petition_id, worker)) == expected, petition_id
            assert stored_totals(system, petition_id, shards=4) == expected, petition_id
            shards = tally.shard_totals(petition_id)
            assert sorted(shards) == [0, 1, 2, 3]
            assert sum(shards.values()) == expected.total
        code, output = tally.recount(*ids)
        assert code == 0, output
        for petition_id in ids:
            assert f"{petition_id}: {ledger.expected(petition_id).total} signatures, no difference" in output
    finally:
        publisher.close()
        tally.stop_all()


def test_a_tally_or_recount_told_another_count_than_the_topics_refuses_to_start(
    system: SystemClient, tmp_path: Path
) -> None:
    tally = PrivateTally(system, "p4x", tmp_path, PETITIONS_SIGNATURE_PARTITIONS="4")
    tally.migrate()
    topic = tally.signatures_topic

    def refused(name: str, partitions: str, prefix: str) -> str:
        """Starts a tally with that partition count and topic prefix; the
        output it exited with, once it has exited (non-zero)."""
        service = start_service(
            name,
            "services.tally",
            [],
            tally.env,
            {
                "PETITIONS_SIGNATURE_PARTITIONS": partitions,
                "PETITIONS_TOPIC_PREFIX": prefix,
                "PETITIONS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
                "PETITIONS_METRICS_PORT": "0",
            },
            tmp_path,
        )
        try:
            eventually(lambda: service.process.poll() is not None, 120, message=f"{name} still running")
        finally:
            service.stop()
        assert service.process.returncode != 0, service.log_tail()
        return service.log_tail()

    mismatch = f"the signatures topic {topic!r} has 4 partitions, but PETITIONS_SIGNATURE_PARTITIONS is 6"
    assert mismatch in refused("tally-six", "6", tally.prefix)
    missing = f"{system.namespace.topic_prefix}never-migrated-"
    assert f"the signatures topic '{missing}signatures' does not exist" in refused("tally-nowhere", "4", missing)

    result = run_cli({**tally.env, "PETITIONS_SIGNATURE_PARTITIONS": "6"}, "recount", "no-such-petition")
    assert result.returncode != 0, result.stdout
    assert f"petitions recount: {mismatch}" in result.stderr, result.stdout + result.stderr
