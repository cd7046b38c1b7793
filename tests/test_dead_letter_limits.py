"""The dead-letter limits are kept per partition: undecodable messages in
a row, and their share of a partition's recent messages. Partitions applied
side by side neither add up nor reset each other's runs; a partition over
a limit stops the worker (its process exits for the supervisor), with
nothing past the stop committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2

from servicekit.lifecycle import EXIT_BACKGROUND_FAILURE
from tests.system import SystemClient
from tests.tally_workers import Ledger, PrivateTally, Record, new_signer
from tests.waiting import eventually

pytestmark = pytest.mark.stack

IN_ROW = 5
PARTITIONS = 6


def partition_of(key: bytes) -> int:
    """Where the producer's default partitioner puts a key."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % PARTITIONS


KEY_A, KEY_B = b"partition a", b"partition b"
assert partition_of(KEY_A) != partition_of(KEY_B)


def publish(tally: PrivateTally, records: list[Record]) -> None:
    publisher = tally.publisher()
    try:
        assert publisher.publish(records) == len(records)
    finally:
        publisher.close()


@pytest.mark.timeout(150)
def test_two_partitions_count_their_own_runs_of_dead_letters(system: SystemClient, tmp_path: Path) -> None:
    tally = PrivateTally(system, "dlp", tmp_path, PETITIONS_MAX_DEAD_LETTERS_IN_ROW=str(IN_ROW))
    tally.migrate()
    petition = system.create_petition("Counted between poison")
    ledger = Ledger()
    worker = tally.start_worker()
    letters_topic = tally.settings.dead_letter_topic
    try:
        # Both partitions at the limit, interleaved: neither is over it, so
        # neither stops (one counter for the process would be at twice it).
        publish(tally, [(key, f"garbage {key!r} {i}".encode()) for i in range(IN_ROW) for key in (KEY_A, KEY_B)])
        eventually(
            lambda: (
                not worker.alive
                or len(system.records_with_key(KEY_A, letters_topic))
                + len(system.records_with_key(KEY_B, letters_topic))
                == 2 * IN_ROW
            ),
            60,
            message="every undecodable message dead-lettered",
        )
        assert worker.alive, f"a partition at the limit stopped the worker:\n{worker.service.log_tail(40)}"

        # A good message on B ends B's run, and only B's: one more bad
        # message on A is A's sixth in a row.
        publish(tally, [(KEY_B, ledger.accepted(petition.id, new_signer(), "13", "FR")[1])])

        def committed_b() -> int:
            partition = partition_of(KEY_B)
            return system.committed_offsets([partition], topic=tally.signatures_topic, group=tally.group)[partition]

        eventually(lambda: committed_b() == IN_ROW + 1, 60, message="B's good message committed")
        publish(tally, [(KEY_A, b"garbage after B's good message")])
        eventually(lambda: not worker.alive, 60, message="the worker stopped for partition A's run")
    finally:
        tally.stop_all()
    assert worker.service.process.returncode == EXIT_BACKGROUND_FAILURE, worker.service.log_tail()
    log_tail = worker.service.log_tail(80)
    assert "could not be applied" in log_tail, log_tail
    assert f"partition {partition_of(KEY_A)}" in log_tail, log_tail
    assert len(system.records_with_key(KEY_A, letters_topic)) == IN_ROW
    committed = system.committed_offsets([partition_of(KEY_A)], topic=tally.signatures_topic, group=tally.group)
    assert committed[partition_of(KEY_A)] == IN_ROW, "nothing past the stop may be committed"


@pytest.mark.timeout(150)
def test_a_partition_mostly_undecodable_stops_the_worker_though_no_run_is_long(
    system: SystemClient, tmp_path: Path
) -> None:
    """Two bad messages of every three: never more than the limit in a row,
    but over the ratio once the window is full."""
    window = 9
    tally = PrivateTally(
        system,
        "dlr",
        tmp_path,
        PETITIONS_MAX_DEAD_LETTERS_IN_ROW=str(IN_ROW),
        PETITIONS_DEAD_LETTER_WINDOW=str(window),
        PETITIONS_MAX_DEAD_LETTER_RATIO="0.5",
    )
    tally.migrate()
    petition = system.create_petition("Mostly poison")
    ledger = Ledger()
    key = b"ratio"
    records: list[Record] = []
    for i in range(8):
        records += [(key, f"garbage {i} a".encode()), (key, f"garbage {i} b".encode())]
        records.append((key, ledger.accepted(petition.id, new_signer(), "13", "FR")[1]))
    worker = tally.start_worker()
    try:
        publish(tally, records)
        eventually(lambda: not worker.alive, 60, message="the worker stopped for the partition's ratio")
    finally:
        tally.stop_all()
    assert worker.service.process.returncode == EXIT_BACKGROUND_FAILURE, worker.service.log_tail()
    assert "of the last 9 messages" in worker.service.log_tail(80), worker.service.log_tail(80)
    committed = system.committed_offsets([partition_of(key)], topic=tally.signatures_topic, group=tally.group)
    assert committed[partition_of(key)] < window, "nothing past the stop may be committed"
