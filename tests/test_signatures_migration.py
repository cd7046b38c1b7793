"""`petitions migrate` moves the system of record from the bucketless
`signatures` table to `signatures_by_bucket`: every row written in the old
layout is in the new table, in its signer's bucket, each cell with its own
write timestamp (so the first signature in the log and later invalidations
still win); a second migrate changes nothing, not even a write the tally
made in the new table in between."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cassandra.concurrent import execute_concurrent_with_args

from servicekit.signature_rows import SIGNATURES_TABLE, UNBUCKETED_SIGNATURES_TABLE, signature_bucket
from tests.harness import run_cli
from tests.system import SystemClient

pytestmark = pytest.mark.stack

# As the tally's archive writes accepts (services/tally/archive.py).
FIRST_WINS_BASE = 10**15
VALUES = ("signature_id", "method", "country", "territory", "signed_at", "ip_hash", "kafka_offset")
MARKS = ("invalidated_at", "invalid_reason")
# More than the copy's page, so it pages.
ROWS = 2_500

# The table as the release before the buckets created it.
OLD_TABLE = """CREATE TABLE {keyspace}.signatures (
    petition_id text,
    shard int,
    signer text,
    signature_id text,
    method text,
    country text,
    territory text,
    signed_at timestamp,
    ip_hash text,
    kafka_offset bigint,
    invalidated_at timestamp,
    invalid_reason text,
    PRIMARY KEY ((petition_id, shard), signer))"""


@pytest.fixture
def keyspace(system: SystemClient) -> Iterator[str]:
    """A keyspace of the test's own, dropped afterwards."""
    name = f"{system.namespace.keyspace}_mig_{uuid.uuid4().hex[:6]}"
    try:
        yield name
    finally:
        system.cassandra.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=60)


def snapshot(system: SystemClient, keyspace: str, table: str) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Every row of the table: its values and each cell's write timestamp,
    keyed by (petition, shard, signer); the bucket too when the table has one."""
    columns = (*VALUES, *MARKS)
    bucket = ", bucket" if table == SIGNATURES_TABLE else ""
    writetimes = ", ".join(f"WRITETIME({c}) AS w_{c}" for c in columns)
    rows = system.cassandra.execute(
        f"SELECT petition_id, shard, signer{bucket}, {', '.join(columns)}, {writetimes} FROM {keyspace}.{table}",
        timeout=60,
    )
    return {(row.petition_id, row.shard, row.signer): row._asdict() for row in rows}


def test_migrate_copies_the_old_table_into_buckets_and_a_second_migrate_changes_nothing(
    system: SystemClient, keyspace: str
) -> None:
    env = {
        **system.namespace.env(system.stack),
        "PETITIONS_KEYSPACE": keyspace,
        "PETITIONS_TOPIC_PREFIX": f"{system.namespace.topic_prefix}mig-",
    }
    db = system.cassandra
    db.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
        timeout=60,
    )
    db.execute(OLD_TABLE.format(keyspace=keyspace), timeout=60)
    accept = db.prepare(
        f"INSERT INTO {keyspace}.signatures (petition_id, shard, signer, {', '.join(VALUES)})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
    )
    mark = db.prepare(
        f"UPDATE {keyspace}.signatures USING TIMESTAMP ? SET invalidated_at = ?, invalid_reason = ?"
        " WHERE petition_id = ? AND shard = ? AND signer = ?"
    )
    signed_at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    signers = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(ROWS)]
    accepts = [
        (
            f"hot-{n % 3}",
            n % 6,
            signer,
            uuid.uuid4().hex,
            "oidc",
            "FR",
            "75",
            signed_at,
            "ab" * 16,
            n,
            FIRST_WINS_BASE - n,
        )
        for n, signer in enumerate(signers)
    ]
    execute_concurrent_with_args(db, accept, accepts, concurrency=64, raise_on_first_error=True)
    # Every tenth signature invalidated later (a mark made at that time),
    # and one invalidation whose signature never arrived.
    now_us = int(time.time() * 1e6)
    marks = [
        (now_us + n, signed_at, "fraud", petition, shard, signer)
        for n, (petition, shard, signer, *_) in enumerate(accepts[::10])
    ]
    marks.append((now_us, signed_at, "fraud", "hot-0", 2, "f" * 64))
    execute_concurrent_with_args(db, mark, marks, concurrency=64, raise_on_first_error=True)
    old = snapshot(system, keyspace, UNBUCKETED_SIGNATURES_TABLE)
    assert len(old) == ROWS + 1

    first = run_cli(env, "migrate")
    assert first.returncode == 0, first.stdout + first.stderr

    copied = snapshot(system, keyspace, SIGNATURES_TABLE)
    assert set(copied) == set(old)
    for key, row in copied.items():
        assert row.pop("bucket") == signature_bucket(key[2]), key
        assert row == old[key], key
    # The accepts' timestamps came across, not the copy's time.
    assert copied[("hot-0", 0, signers[0])]["w_signature_id"] == FIRST_WINS_BASE
    assert copied[("hot-0", 2, "f" * 64)]["signature_id"] is None

    # The tally invalidates a copied signature again in the new table (one
    # the old table holds an earlier mark of); migrate runs again (the next
    # deploy), and the old mark does not come back over the newer one.
    target = accepts[10]
    db.execute(
        f"UPDATE {keyspace}.{SIGNATURES_TABLE} SET invalidated_at = %s, invalid_reason = %s"
        " WHERE petition_id = %s AND shard = %s AND bucket = %s AND signer = %s",
        (signed_at, "later", target[0], target[1], signature_bucket(target[2]), target[2]),
    )
    before = snapshot(system, keyspace, SIGNATURES_TABLE)
    second = run_cli(env, "migrate")
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(system, keyspace, SIGNATURES_TABLE) == before
    assert before[(target[0], target[1], target[2])]["invalid_reason"] == "later"
