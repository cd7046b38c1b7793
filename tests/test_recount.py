"""The recount proves the tally against Cassandra, and rebuilds it after
Redis is lost: the counts come back exact and duplicates stay rejected."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import redis

from petitions.v1 import signing_pb2
from tests.harness import run_cli
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def recount(system: SystemClient, *args: str) -> tuple[int, str]:
    result = run_cli(system.namespace.env(system.stack), "recount", *args)
    return result.returncode, result.stdout + result.stderr


def test_recount_agrees_with_the_live_tally(system: SystemClient) -> None:
    petition = system.create_petition("Counted twice over")
    for territory in ("13", "13", "69"):
        system.sign(system.credential(f"rc-{uuid.uuid4().hex[:8]}", territory=territory).token, petition.id)
    system.settled_tally(petition.id)

    code, output = recount(system, petition.id)

    assert code == 0, output
    assert f"{petition.id}: 3 signatures, no difference" in output


@pytest.mark.destructive
def test_losing_redis_loses_nothing_after_a_repair(system: SystemClient) -> None:
    petition = system.create_petition("Survives a Redis loss")
    people = [system.credential(f"loss-{uuid.uuid4().hex[:8]}", territory=t) for t in ("13", "13", "75", "2A")]
    for person in people:
        system.sign(person.token, petition.id)
    before = system.settled_tally(petition.id)
    assert before.total == 4

    redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"]).flushdb()
    assert system.fresh_tally(petition.id).total == 0

    code, output = recount(system, petition.id)
    assert code == 1
    assert "DIFFERS" in output
    code, output = recount(system, "--repair", petition.id)
    assert code == 0, output
    after = system.settled_tally(petition.id)
    assert (after.total, dict(after.by_territory)) == (4, {"13": 2, "75": 1, "2A": 1})

    # Signing's fast ledger was lost too, so these duplicates reach the log;
    # the rebuilt signer sets still count each person once.
    outcomes = Counter(system.sign(person.token, petition.id).outcome for person in people)
    newcomer = system.credential(f"loss-{uuid.uuid4().hex[:8]}", territory="75")
    system.sign(newcomer.token, petition.id)
    assert set(outcomes) <= {signing_pb2.SignResponse.OUTCOME_ACCEPTED, signing_pb2.SignResponse.OUTCOME_ALREADY_SIGNED}
    final = system.settled_tally(petition.id)
    assert (final.total, dict(final.by_territory)) == (5, {"13": 2, "75": 2, "2A": 1})
    assert recount(system, petition.id)[0] == 0


@pytest.mark.destructive
def test_the_tally_heals_itself_when_redis_loses_its_state(system: SystemClient) -> None:
    petition = system.create_petition("Heals after a Redis loss")
    before = [system.credential(f"heal-{uuid.uuid4().hex[:8]}", territory="13") for _ in range(6)]
    for person in before:
        system.sign(person.token, petition.id)
    assert system.settled_tally(petition.id).total == len(before)
    rebuilds_before = system.metric_value("tally", "petitions_tally_shard_rebuilds_total")

    redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"]).flushdb()
    # New signatures land on every partition (40 keys over 6 partitions miss
    # one with odds of about 1 in 2,500); each partition's first batch after
    # the loss finds the gap and rebuilds its shard from Cassandra.
    after = [system.credential(f"heal-{uuid.uuid4().hex[:8]}", territory="69") for _ in range(40)]
    for person in after:
        system.sign(person.token, petition.id)
    # A duplicate of an earlier signer: signing's ledger was lost with Redis,
    # so it reaches the log, and the rebuilt signer set rejects it.
    system.sign(system.credential_for_same(before[0]).token, petition.id)

    healed = system.settled_tally(petition.id)
    assert (healed.total, dict(healed.by_territory)) == (46, {"13": 6, "69": 40})
    assert system.metric_value("tally", "petitions_tally_shard_rebuilds_total") > rebuilds_before
    code, output = recount(system, petition.id)
    assert code == 0, output
