"""The end of a legislature through the petitions service's gRPC API
against the real stores: every petition of it closed (if open) and
archived, new deposits in the next one, a repeat finishing what a crashed
call left, and every refusal changing nothing.

Marked legislature_end: closing the session's legislature archives every
petition the session's other tests created, so these run after them (and
before the audits, tests/conftest.py)."""

from __future__ import annotations

import functools
import signal
import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest

from petitions.v1 import petition_pb2, petitions_pb2, petitions_pb2_grpc
from servicekit.settings import CommonSettings
from tests.errors import rejection
from tests.harness import Namespace, ServiceProcess, free_port, start_service, wait_serving
from tests.petition_authors import (
    Refusal,
    assert_refusals_change_nothing,
    audit,
    author,
    bearer,
    draft,
    stored,
    submit,
    submitted,
)
from tests.system import SystemClient
from tests.waiting import eventually

pytestmark = [pytest.mark.stack, pytest.mark.legislature_end]

G = grpc.StatusCode
END = "end of legislature"


def _current(system: SystemClient, stub: petitions_pb2_grpc.PetitionsStub | None = None) -> str:
    reply = (stub or system.petitions).ListPetitionTypes(petitions_pb2.ListPetitionTypesRequest(), timeout=10)
    return str(reply.current_legislature)


def _close(
    system: SystemClient,
    legislature: str,
    next_legislature: str,
    metadata: tuple[tuple[str, str | bytes], ...] | None = None,
    stub: petitions_pb2_grpc.PetitionsStub | None = None,
) -> petitions_pb2.CloseLegislatureResponse:
    reply: petitions_pb2.CloseLegislatureResponse = (stub or system.petitions).CloseLegislature(
        petitions_pb2.CloseLegislatureRequest(legislature=legislature, next_legislature=next_legislature),
        metadata=system.admin() if metadata is None else metadata,
        timeout=120,
    )
    return reply


def _of_legislature(system: SystemClient, legislature: str) -> list[petition_pb2.Petition]:
    """Every petition of the legislature, as staff see them."""
    found: list[petition_pb2.Petition] = []
    token = ""
    while True:
        page = system.petitions.ListPetitions(
            petitions_pb2.ListPetitionsRequest(legislature=legislature, page_size=500, page_token=token),
            metadata=system.staff("staff-clerk"),
            timeout=30,
        )
        found += page.petitions
        token = page.next_page_token
        if not token:
            return found


def _expected(petitions: list[petition_pb2.Petition]) -> tuple[int, int]:
    """(closed, archived) a close of their legislature reports."""
    live = [p for p in petitions if p.state != petition_pb2.PETITION_STATE_ARCHIVED]
    return len([p for p in live if p.state == petition_pb2.PETITION_STATE_OPEN]), len(live)


def _trail_is(system: SystemClient, petition_id: str, actions: list[str]) -> bool:
    return [e.action for e in audit(system, petition_id)] == actions


def _trail_of(system: SystemClient, petition_id: str) -> str:
    return f"{petition_id}: {[(e.version, e.action) for e in audit(system, petition_id)]}"


def _new_name() -> str:
    return f"l-{uuid.uuid4().hex[:8]}"


def test_the_end_of_a_legislature_closes_and_archives_every_petition_of_it(system: SystemClient) -> None:
    legislature = _current(system)
    writer = author(system)
    opened = system.create_petition("Open at the end")
    a_draft = draft(system, writer)
    waiting = submitted(system)
    rejected = system.petitions.ReviewPetition(
        petitions_pb2.ReviewPetitionRequest(
            petition_id=submitted(system).id,
            decision=petitions_pb2.ReviewPetitionRequest.DECISION_REJECT,
            rejection=petition_pb2.Rejection(reason_code="unclear", explanation="What does it ask?"),
        ),
        metadata=system.staff("staff-moderator-a"),
        timeout=10,
    )
    closed = system.petitions.ClosePetition(
        petitions_pb2.ClosePetitionRequest(petition_id=system.create_petition("Closed before").id, reason="done"),
        metadata=system.staff("staff-clerk"),
        timeout=10,
    )
    gathering = submit(system, writer, draft(system, writer, "uk").id)
    mine = [opened, a_draft, waiting, rejected, closed, gathering]
    next_legislature = _new_name()
    signer = system.credential(f"signer-{uuid.uuid4().hex[:8]}").token

    def close_as(metadata: tuple[tuple[str, str | bytes], ...]) -> object:
        return _close(system, legislature, next_legislature, metadata)

    def close(ending: str, beginning: str) -> object:
        return _close(system, ending, beginning)

    bad = G.INVALID_ARGUMENT
    assert_refusals_change_nothing(
        system,
        [p.id for p in mine],
        [
            Refusal(
                "a moderator", lambda: close_as(system.staff("staff-moderator-a")), G.PERMISSION_DENIED, "WRONG_ROLE"
            ),
            Refusal("a clerk", lambda: close_as(system.staff("staff-clerk")), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("an author", lambda: close_as(writer.metadata), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("a signer", lambda: close_as(bearer(signer)), G.PERMISSION_DENIED, "WRONG_ROLE"),
            Refusal("no credential", lambda: close_as(()), G.UNAUTHENTICATED, "CREDENTIAL_REQUIRED"),
            Refusal(
                "not the current one",
                lambda: close(_new_name(), next_legislature),
                G.FAILED_PRECONDITION,
                "LEGISLATURE_NOT_CURRENT",
            ),
            Refusal("a space in the name", lambda: close(legislature, "18 bis"), bad, "INVALID_FIELD"),
            Refusal("a line feed after the name", lambda: close(legislature, "18\n"), bad, "INVALID_FIELD"),
            Refusal("17 characters", lambda: close(legislature, "x" * 17), bad, "INVALID_FIELD"),
            Refusal("no next legislature", lambda: close(legislature, ""), bad, "INVALID_FIELD"),
            Refusal("the same one next", lambda: close(legislature, legislature), bad, "INVALID_FIELD"),
            Refusal("a bad legislature", lambda: close(legislature + "\n", next_legislature), bad, "INVALID_FIELD"),
        ],
    )
    with pytest.raises(grpc.RpcError) as raised:
        close("no-such-one", next_legislature)
    assert f"the current legislature is {legislature!r}" in rejection(raised.value).message
    assert _current(system) == legislature

    expected = _expected(_of_legislature(system, legislature))
    reply = _close(system, legislature, next_legislature)
    assert (reply.closed, reply.archived) == expected
    assert reply.closed >= 1
    assert reply.archived >= len(mine)

    assert _of_legislature(system, legislature)
    assert all(p.state == petition_pb2.PETITION_STATE_ARCHIVED for p in _of_legislature(system, legislature))
    ended = stored(system, opened.id)
    assert ended.closed_reason == END
    assert [(e.action, e.role, e.reason) for e in audit(system, opened.id)][-2:] == [
        ("close", "administrator", END),
        ("archive", "administrator", END),
    ]
    for petition in mine[1:]:
        trail = audit(system, petition.id)
        assert (trail[-1].action, trail[-1].state_before, trail[-1].state_after) == (
            "archive",
            petition.state,
            petition_pb2.PETITION_STATE_ARCHIVED,
        )
        assert END not in [e.reason for e in trail if e.action == "close"]

    # New deposits go to the next legislature.
    assert _current(system) == next_legislature
    assert draft(system, author(system)).legislature == next_legislature

    # A repeat of the same call finds nothing left to do; any other names
    # the current legislature.
    repeat = _close(system, legislature, next_legislature)
    assert (repeat.closed, repeat.archived) == (0, 0)
    for ending, beginning in ((legislature, _new_name()), (_new_name(), next_legislature)):
        with pytest.raises(grpc.RpcError) as other:
            _close(system, ending, beginning)
        refused = rejection(other.value)
        assert (refused.code, refused.reason) == (G.FAILED_PRECONDITION, "LEGISLATURE_NOT_CURRENT")
        assert repr(next_legislature) in refused.message
    # An ended legislature is not a new one.
    with pytest.raises(grpc.RpcError) as old:
        _close(system, next_legislature, legislature)
    assert rejection(old.value).code is G.INVALID_ARGUMENT
    assert _current(system) == next_legislature


@pytest.fixture
def second_petitions(
    system: SystemClient, stack: CommonSettings, namespace: Namespace
) -> Iterator[tuple[ServiceProcess, str]]:
    """Another petitions process of the session, for a test to kill, and its
    gRPC address."""
    address = f"127.0.0.1:{free_port()}"
    process = start_service(
        "petitions-second",
        "services.petitions",
        [],
        namespace.env(stack),
        {"PETITIONS_GRPC_ADDRESS": address, "PETITIONS_METRICS_PORT": str(free_port())},
        namespace.work_dir / "logs",
    )
    try:
        wait_serving(process, address)
        yield process, address
    finally:
        process.stop()


def test_a_repeat_finishes_the_archive_a_crashed_close_left_half_done(
    system: SystemClient, second_petitions: tuple[ServiceProcess, str]
) -> None:
    process, address = second_petitions
    legislature = _current(system)
    petitions = [system.create_petition(f"Open {i}") for i in range(40)]
    next_legislature = _new_name()
    channel = grpc.insecure_channel(address)
    other = petitions_pb2_grpc.PetitionsStub(channel)
    outcome: list[object] = []

    def close_on_the_other() -> None:
        try:
            outcome.append(_close(system, legislature, next_legislature, stub=other))
        except grpc.RpcError as error:
            outcome.append(error)

    system.admin()  # the credential is fetched (and kept) before the race
    caller = threading.Thread(target=close_on_the_other)
    caller.start()
    # The crash: the moment the legislature has moved, before the archive is done.
    eventually(lambda: _current(system) == next_legislature, 30, interval=0.005)
    process.process.send_signal(signal.SIGKILL)
    process.process.wait(10)
    caller.join(30)
    channel.close()
    assert outcome, "the call on the killed process never returned"

    left = [p for p in _of_legislature(system, legislature) if p.state != petition_pb2.PETITION_STATE_ARCHIVED]
    assert {p.id for p in left} & {p.id for p in petitions}, "the crash came after the whole archive was done"
    print(f"the crash left {len(left)} petitions of legislature {legislature!r} to archive")
    expected = _expected(_of_legislature(system, legislature))

    # legislature is no longer the current one: only this repeat may name it.
    reply = _close(system, legislature, next_legislature)
    assert (reply.closed, reply.archived) == expected
    for petition in petitions:
        assert stored(system, petition.id).state == petition_pb2.PETITION_STATE_ARCHIVED
        # A change the killed process wrote but did not publish reaches the
        # audit trail through the outbox sweeper.
        eventually(
            functools.partial(_trail_is, system, petition.id, ["create", "close", "archive"]),
            10,
            message=functools.partial(_trail_of, system, petition.id),
        )
