"""A tally worker told to stop (SIGTERM) finishes the batch it is applying
and commits it before it leaves its consumer group: the next member of the
group replays nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stored_signatures import petition_rows
from tests.system import SystemClient
from tests.tally_workers import Ledger, PrivateTally, new_signer
from tests.waiting import eventually

pytestmark = pytest.mark.stack

# One key, so one partition and, with the batch size below, one or two
# batches. The archive writes them two rows at a time, one write at a time
# (the settings below), so each takes seconds: long enough to stop the
# worker in the middle of one. (With the default 16 concurrent writes over
# 64 buckets a batch took a fraction of a second, less than two polls of
# the probe below, and the window was missed in CI.)
MESSAGES = 12_000
KEY = b"drained on stop"


def archived(system: SystemClient, petition_id: str) -> int:
    """Signature rows the system of record holds for the petition."""
    return len(petition_rows(system.cassandra, petition_id, "signer"))


def in_the_middle_of_a_batch(system: SystemClient, tally: PrivateTally, petition_id: str) -> bool:
    """Rows on record whose offsets the group has not committed (each
    message is a new signer, so one row each). The rows are read first:
    both only grow, so rows read earlier outnumbering the offsets read
    later proves uncommitted rows at the later read."""
    rows = archived(system, petition_id)
    return rows > tally.committed()


@pytest.mark.timeout(240)
def test_sigterm_mid_batch_commits_the_batch_and_the_next_worker_replays_nothing(
    system: SystemClient, tmp_path: Path
) -> None:
    tally = PrivateTally(
        system,
        "drain",
        tmp_path,
        PETITIONS_MAX_BATCH_MESSAGES=str(MESSAGES),
        PETITIONS_BATCH_LINGER_MS="1000",
        PETITIONS_DRAIN_SECONDS="90",
        PETITIONS_CASSANDRA_WRITE_CONCURRENCY="1",
        PETITIONS_CASSANDRA_ROWS_PER_BATCH="2",
    )
    tally.migrate()
    petition = system.create_petition("Drained on stop")
    ledger = Ledger()
    publisher = tally.publisher()
    try:
        records = [(KEY, ledger.accepted(petition.id, new_signer(), "13", "FR")[1]) for _ in range(MESSAGES)]
        assert publisher.publish(records) == MESSAGES
    finally:
        publisher.close()

    first = tally.start_worker()
    # Mid-batch: rows of a batch are on record, its offsets not committed.
    eventually(
        lambda: in_the_middle_of_a_batch(system, tally, petition.id),
        90,
        interval=0.05,
        message="the worker archiving a batch before committing it",
    )
    assert first.service.stop(timeout=120) == 0, first.service.log_tail()

    committed = tally.committed()
    assert committed > 0, "the batch in flight was committed before the worker left"
    assert archived(system, petition.id) == committed, "everything archived was committed, nothing more"

    second = tally.start_worker()
    try:
        tally.wait_applied(120)
        # (The private log's petition view does not hold the session's
        # petitions, so the count is read from the counters themselves.)
        assert sum(tally.shard_totals(petition.id).values()) == MESSAGES
        # The second worker applied exactly what the first had not: a replay
        # of the first one's batch would count here (its applies are
        # counted even when the Lua script skips their offsets).
        assert tally.applied(second) == MESSAGES - committed
    finally:
        tally.stop_all()
