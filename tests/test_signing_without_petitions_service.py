"""Signing learns petitions only from the petition-state topic: it keeps
signing with the petitions service stopped, and a close made through the
petitions service reaches every signing process within a second.

The test runs a petitions service process of its own (on its own port,
publishing on the session's petition-state topic), so it can stop and
start it; signing has no address of any petitions service at all. A second
signing process of the session shows that every process sees the close,
not just one."""

from __future__ import annotations

import ast
import functools
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from petitions.v1 import petitions_pb2, petitions_pb2_grpc, signing_pb2, signing_pb2_grpc
from servicekit.settings import CommonSettings
from tests.errors import rejection
from tests.harness import REPO, Namespace, ServiceProcess, free_port, start_service, wait_serving
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = pytest.mark.stack

Starter = Callable[[str, str], tuple[ServiceProcess, str]]


@pytest.fixture
def processes(stack: CommonSettings, namespace: Namespace, system: SystemClient) -> Iterator[Starter]:
    """Starts processes of the session's system (module, name) on ports of
    their own, and stops those still running at the end."""
    started: list[ServiceProcess] = []
    logs = namespace.work_dir / "logs"

    def start(name: str, module: str) -> tuple[ServiceProcess, str]:
        address = f"127.0.0.1:{free_port()}"
        process = start_service(
            f"{name}-{uuid.uuid4().hex[:6]}",
            module,
            [],
            namespace.env(stack),
            {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": str(free_port())},
            logs,
        )
        started.append(process)
        wait_serving(process, address)
        return process, address

    yield start
    for process in reversed(started):
        process.stop()


def sign(stub: signing_pb2_grpc.SigningStub, token: str, petition_id: str) -> str:
    """The Sign outcome (ACCEPTED, ALREADY_SIGNED), or the refusal's reason."""
    try:
        reply: signing_pb2.SignResponse = stub.Sign(
            signing_pb2.SignRequest(
                credential=token,
                petition_id=petition_id,
                idempotency_key=uuid.uuid4().hex,
                client_ip=f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}",
            ),
            timeout=10,
        )
    except grpc.RpcError as error:
        return rejection(error).reason
    return signing_pb2.SignResponse.Outcome.Name(reply.outcome).removeprefix("OUTCOME_")


def decided(stub: signing_pb2_grpc.SigningStub, token: str, petition_id: str) -> str | None:
    outcome = sign(stub, token, petition_id)
    return None if outcome == "PETITION_NOT_FOUND" else outcome


def first_refusal(stub: signing_pb2_grpc.SigningStub, token: str, petition_id: str, since: float) -> float:
    """Seconds from `since` to the first Sign this process refuses as
    PETITION_NOT_OPEN; fails after 5 s, or on any other answer."""

    def refused_after() -> float | None:
        outcome = sign(stub, token, petition_id)
        if outcome == "PETITION_NOT_OPEN":
            return time.perf_counter() - since
        assert outcome == "ALREADY_SIGNED", outcome
        return None

    # Asked again at once (no interval): the seconds returned are the
    # measurement, and a pause would add to them.
    return eventually(
        refused_after,
        max(0.0, since + 5 - time.perf_counter()),
        interval=0,
        message="the close never reached this signing process",
    )


def known_to_tally(system: SystemClient, petition_id: str) -> bool:
    try:
        system.get_tally(petition_id)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def test_signing_goes_on_without_the_petitions_service_and_every_process_sees_a_close(
    system: SystemClient, processes: Starter
) -> None:
    admin = system.admin()
    petitions_process, petitions_address = processes("petitions-own", "services.petitions")
    second_signing_process, second_address = processes("signing-2", "services.signing")
    with grpc.insecure_channel(petitions_address) as channel, grpc.insecure_channel(second_address) as second:
        petitions = petitions_pb2_grpc.PetitionsStub(channel)
        signing = {"session's signing": system.signing, "second signing": signing_pb2_grpc.SigningStub(second)}
        petition = petitions.CreatePetition(
            petitions_pb2.CreatePetitionRequest(id=f"nops-{uuid.uuid4().hex[:10]}", title="No service", open=True),
            metadata=admin,
            timeout=30,
        )

        # The petition's state is on the topic once a view (tally's) has it.
        eventually(lambda: known_to_tally(system, petition.id), 5, interval=0.05, message="tally never saw it")
        assert petitions_process.stop() == 0
        people = [system.credential(f"nops-{uuid.uuid4().hex[:8]}") for _ in signing]
        for (name, stub), person in zip(signing.items(), people, strict=True):
            # Asked again only while the process has not read the petition
            # yet (a refusal changes nothing); the service is gone by now.
            outcome = eventually(
                functools.partial(decided, stub, person.token, petition.id), 5, interval=0.05, message=name
            )
            assert outcome == "ACCEPTED", name
        assert system.settled_tally(petition.id).total == len(people)

    petitions_process, petitions_address = processes("petitions-own", "services.petitions")
    with grpc.insecure_channel(petitions_address) as channel, grpc.insecure_channel(second_address) as second:
        petitions = petitions_pb2_grpc.PetitionsStub(channel)
        signing = {"session's signing": system.signing, "second signing": signing_pb2_grpc.SigningStub(second)}
        tokens = dict(zip(signing, (p.token for p in people), strict=True))
        for name, stub in signing.items():
            assert sign(stub, tokens[name], petition.id) == "ALREADY_SIGNED", name
        petitions.ClosePetition(
            petitions_pb2.ClosePetitionRequest(petition_id=petition.id, reason="test close"),
            metadata=admin,
            timeout=30,
        )
        closed_at = time.perf_counter()
        # Every process is asked at once, each in a thread of its own, over
        # and over until it refuses: a signer who already signed is answered
        # ALREADY_SIGNED while the petition is open, and PETITION_NOT_OPEN as
        # soon as the process knows it closed.
        with ThreadPoolExecutor(len(signing)) as pool:
            refused_after = {
                name: pool.submit(first_refusal, stub, tokens[name], petition.id, closed_at)
                for name, stub in signing.items()
            }
            seen = {name: future.result() for name, future in refused_after.items()}
    print(
        "\nClosePetition answered → first PETITION_NOT_OPEN: "
        + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in sorted(seen.items()))
    )
    assert max(seen.values()) < 1.0, seen
    assert second_signing_process.process.poll() is None


def test_signing_and_tally_import_nothing_of_the_petition_tables() -> None:
    """They learn petitions from the petition-state topic only: no import of
    the catalogue (the petitions service's tables) or of the service."""
    forbidden = ("services.catalogue", "services.petitions")
    found = []
    for path in sorted([*(REPO / "services" / "signing").glob("*.py"), *(REPO / "services" / "tally").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{Path(path).relative_to(REPO)}: {n}" for n in names if n.startswith(forbidden)]
    assert found == []
