"""The steady load and the no-loss check the cluster fault tests rely on
(tests/steady_load.py), proven on the shared single stack: a private signing
process killed with SIGKILL under load and started again loses no
acknowledged signature, and the report says how long signing was refused;
and the check fails, naming it, when a receipt is not in the system."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.harness import ServiceProcess, free_port, start_service, wait_serving
from tests.steady_load import ACCEPTED, RETRIED, SIGNED, NoLossError, Signature, SteadyLoad, check_no_loss
from tests.system import SystemClient
from tests.waiting import eventually

# Generous: the first test of a session also starts the session's system,
# and the fault test waits for a signing process to start again.
pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

FAULT = "kill -9 signing"


def start_signing(system: SystemClient, address: str, logs: Path, name: str) -> ServiceProcess:
    signing = start_service(
        name,
        "services.signing",
        [],
        system.namespace.env(system.stack),
        {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": "0"},
        logs,
    )
    # A busy 2-core host (every JVM of several stacks) can take a minute or
    # more to start a Python service.
    wait_serving(signing, address, timeout=240)
    return signing


def test_a_signing_process_killed_under_load_loses_nothing(system: SystemClient, tmp_path: Path) -> None:
    hot = system.create_petition("Signed while signing dies")
    other = system.create_petition("The other one")
    address = f"127.0.0.1:{free_port()}"
    signing = start_signing(system, address, tmp_path, "signing-load")
    try:
        with SteadyLoad(system, [hot.id, other.id], rate=20, signing_address=address) as load:
            load.wait_accepted(40, timeout=120)
            load.mark_fault(FAULT)
            signing.process.kill()
            signing.process.wait(10)
            # Down for as long as it takes the load to see it refused.
            eventually(
                lambda: load.report().fault(FAULT).refused_calls >= 5,
                30,
                message="no Sign was refused while signing was dead",
            )
            signing = start_signing(system, address, tmp_path, "signing-load-2")
            load.wait_recovered(FAULT, timeout=120)
            load.wait_accepted(load.accepted + 40, timeout=120)
        report = load.report()
    finally:
        signing.stop()
    print(report.summary())

    fault = report.fault(FAULT)
    assert fault.recovery_seconds is not None, fault
    assert fault.recovery_seconds > 0, fault
    assert fault.refused_calls >= 5, fault
    assert set(fault.refused_codes) <= {code.name for code in RETRIED}, fault
    outcomes = report.outcomes()
    assert set(outcomes) <= SIGNED, f"signatures that did not end signed: {report.summary()}"
    # Distinct persons with one key each: never ALREADY_SIGNED.
    assert outcomes[ACCEPTED] == len(report.signatures) >= 80, report.summary()
    # The refused calls were retried with the same key until accepted.
    retried = [s for s in report.signatures if len(s.attempts) > 1]
    assert retried, report.summary()
    assert all(s.outcome == ACCEPTED and not s.attempts[0].ok for s in retried), report.summary()
    assert {s.petition_id for s in report.signatures} == {hot.id, other.id}
    assert {s.territory for s in report.signatures} == {"13", "75", "2A", "971"}

    summary = check_no_loss(system, report.signatures, [hot.id, other.id])
    print(summary.line())
    assert sum(summary.per_petition.values()) == len(report.signatures)


def test_check_no_loss_names_a_receipt_the_system_does_not_have(system: SystemClient) -> None:
    petition = system.create_petition("A receipt nobody issued")
    with SteadyLoad(system, [petition.id], rate=10, prefill_seconds=2) as load:
        load.wait_accepted(10, timeout=120)
    print(load.report().summary())
    signatures = load.report().signatures
    # The genuine receipts pass...
    check_no_loss(system, signatures, [petition.id])

    # ...and one that the system never issued is named by every check that
    # can see it (recount compares Cassandra with the tally: both agree).
    forged = Signature(
        petition_id=petition.id,
        signer=uuid.uuid4().hex * 2,
        territory="2A",
        idempotency_key=uuid.uuid4().hex,
        client_ip="10.9.9.9",
        outcome=ACCEPTED,
        signature_id=uuid.uuid4().hex,
        partition=0,
        offset=0,
    )
    with pytest.raises(NoLossError) as raised:
        check_no_loss(system, [*signatures, forged], [petition.id], settle_timeout=5)
    message = str(raised.value)
    print(message)
    distinct = len({s.signer for s in signatures})
    assert f"has no SignatureAccepted for signature {forged.signature_id}" in message
    assert f"1 of {distinct + 1} signers of {petition.id} not stored: {forged.signer[:16]}" in message
    assert f"total {distinct}, the load's distinct signers {distinct + 1}" in message
    assert "territory 2A:" in message
    assert "recount" not in message

    # A genuine receipt whose position is wrong is caught as well.
    moved = signatures[0]
    misplaced = Signature(**{**vars(moved), "offset": moved.offset + 10_000})
    with pytest.raises(NoLossError, match=f"the receipt says partition {moved.partition} offset"):
        check_no_loss(system, [misplaced, *signatures[1:]], [petition.id], settle_timeout=5)
