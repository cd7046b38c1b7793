"""A message tally can never apply goes to the dead-letter topic, with why
and where it came from, and the partition moves on: the signature behind it
is counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from petitions.v1 import events_pb2
from servicekit.lifecycle import EXIT_BACKGROUND_FAILURE
from servicekit.settings import CommonSettings
from services.signing.publisher import signature_key
from tests.system import SystemClient
from tests.tally_workers import Ledger, LogPublisher, PrivateTally, new_signer
from tests.waiting import eventually

pytestmark = pytest.mark.stack

DEAD_LETTERS_SAMPLE = "petitions_tally_dead_letters_total"
CAP = 5


def test_poison_messages_are_dead_lettered_and_the_partition_moves_on(system: SystemClient) -> None:
    petition = system.create_petition("Signed behind poison")
    signer = new_signer()
    key = signature_key(petition.id, signer)
    # What a broken producer might write, keyed like the signature that
    # follows: all of them land in one partition, in this order.
    poison = {
        b"not a signature event": "not a SignatureEvent",
        events_pb2.SignatureEvent(
            accepted=events_pb2.SignatureAccepted(petition_id=petition.id, signer=signer, territory="13")
        ).SerializeToString(): "signature_id",
        events_pb2.SignatureEvent(
            invalidated=events_pb2.SignatureInvalidated(petition_id=petition.id, reason="no signer")
        ).SerializeToString(): "invalidation",
    }
    ledger = Ledger()
    valid = ledger.accepted(petition.id, signer, "13", "FR")
    assert valid[0] == key
    dead_lettered_before = system.metric_value("tally", DEAD_LETTERS_SAMPLE)

    publisher = LogPublisher(system.stack, system.signatures_topic)
    try:
        assert publisher.publish([*((key, value) for value in poison), valid]) == len(poison) + 1
    finally:
        publisher.close()

    tally = system.settled_tally(petition.id)
    assert (tally.total, dict(tally.by_territory)) == (1, {"13": 1})

    sources = {record.value: record for record in system.records_with_key(key)}
    assert len({record.partition for record in sources.values()}) == 1
    settings = CommonSettings(topic_prefix=system.namespace.topic_prefix)
    letters = [
        events_pb2.DeadLetter.FromString(record.value)
        for record in system.records_with_key(key, topic=settings.dead_letter_topic)
    ]
    assert sorted(letter.value for letter in letters) == sorted(poison)
    for letter in letters:
        source = sources[letter.value]
        assert (letter.source_topic, letter.partition, letter.offset, letter.key) == (
            system.signatures_topic,
            source.partition,
            source.offset,
            key,
        )
        assert poison[letter.value] in letter.reason, letter.reason
        assert letter.dead_lettered_at.seconds > 0
    assert system.metric_value("tally", DEAD_LETTERS_SAMPLE) == dead_lettered_before + len(poison)


@pytest.mark.timeout(120)
def test_a_run_of_poison_stops_the_consumer_instead_of_dead_lettering_the_log(
    system: SystemClient, tmp_path: Path
) -> None:
    """A bad deploy (or a wrong topic) makes every message undecodable: past
    a few in a row the worker stops for its supervisor, rather than emptying
    the log into the dead-letter topic."""
    tally = PrivateTally(system, "dl", tmp_path, PETITIONS_MAX_DEAD_LETTERS_IN_ROW=str(CAP))
    tally.migrate()
    worker = tally.start_worker()
    publisher = tally.publisher()
    key = b"one partition"
    try:
        assert publisher.publish([(key, f"garbage {i}".encode()) for i in range(CAP * 3)]) == CAP * 3
        eventually(lambda: not worker.alive, 60, interval=0.2, message="the worker stopped")
    finally:
        publisher.close()
        tally.stop_all()
    assert worker.service.process.returncode == EXIT_BACKGROUND_FAILURE, worker.service.log_tail()
    assert "could not be applied" in worker.service.log_tail(80)
    letters = system.records_with_key(key, topic=tally.settings.dead_letter_topic)
    assert len(letters) == CAP, "only the messages before the cap were dead-lettered"
    assert tally.committed() <= CAP, "nothing past the stop may be committed"
