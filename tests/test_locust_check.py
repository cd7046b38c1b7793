"""The load test's tally check tells the truth, in one-process and in
distributed mode.

A Sign the service accepted but whose answer the user never saw (in flight
when the run stopped) is not a miscount: a proxy in front of signing
forwards every Sign at once and holds its answer back, the run stops its
users at once (--stop-timeout 0), and the check must pass and say how many
calls were in flight. A tally that is really short (signatures invalidated
behind the load test's back) must fail, naming the petition and the
difference; so must a run that lost a ledger."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from petitions.v1 import signing_pb2
from servicekit.settings import REPO_ROOT
from tests.harness import free_port
from tests.stored_signatures import petition_rows
from tests.system import SystemClient

pytestmark = pytest.mark.stack

ARTIFACTS = REPO_ROOT / "test-artifacts" / "locust"
# How long the proxy holds each Sign's answer: longer than the run's tail,
# so every signer has a call in flight when the users are stopped. Time is
# the subject here (a slow answer), not a wait for a state.
ANSWER_DELAY_SECONDS = 3.0
SIGN_METHOD = "/petitions.v1.Signing/Sign"


class DelayingProxy(grpc.GenericRpcHandler):
    """Forwards every unary call to signing as raw bytes; holds back the
    answer of each Sign (never the call itself) by ANSWER_DELAY_SECONDS."""

    def __init__(self, upstream: grpc.Channel):
        self._upstream = upstream
        self.signs_forwarded = 0
        self._lock = threading.Lock()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = str(handler_call_details.method)
        forward: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._upstream.unary_unary(method)

        def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                answer: bytes = forward(request, timeout=30, metadata=context.invocation_metadata())
            except grpc.RpcError as error:
                context.abort(error.code(), error.details() or "")
            if method == SIGN_METHOD:
                with self._lock:
                    self.signs_forwarded += 1
                # Time is the subject: the proxy delays the answer, not a state.
                time.sleep(ANSWER_DELAY_SECONDS)
            return answer

        return grpc.unary_unary_rpc_method_handler(behaviour)


@pytest.fixture
def slow_signing(system: SystemClient) -> Iterator[tuple[str, DelayingProxy]]:
    proxy = DelayingProxy(system.channels["signing"])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((proxy,))
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield address, proxy
    finally:
        server.stop(grace=None)


def run_locust(system: SystemClient, *arguments: str) -> tuple[int, str]:
    env = system.namespace.env(system.stack)
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.run_locust", *arguments, "--settle-timeout", "40"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def short_run(system: SystemClient, signing_address: str, workers: int) -> tuple[int, str]:
    return run_locust(
        system,
        "--scenario",
        "steady",
        "--seconds",
        "4",
        "--users",
        "10",
        "--workers",
        str(workers),
        "--stop-timeout",
        "0",
        "--signing",
        signing_address,
        "--tally",
        system.namespace.address("tally"),
        "--secrets-dir",
        str(system.namespace.secrets_dir),
        "--results-dir",
        str(ARTIFACTS),
        # The SLO is not what this tests (every answer is held 3 s).
        "--max-sign-p99-ms",
        "100000",
        "--max-error-ratio",
        "1",
    )


def in_flight_at_stop(output: str) -> int:
    match = re.search(r"^tally check: PASSED \(.*; ([\d,]+) in flight at stop\)$", output, re.MULTILINE)
    assert match is not None, output
    return int(match.group(1).replace(",", ""))


def run_directory(output: str) -> Path:
    match = re.search(r"results in (\S+)$", output, re.MULTILINE)
    assert match is not None, output
    return Path(match.group(1))


def petition_line(output: str) -> tuple[str, int, int, int]:
    """(petition, tally, accepted, in flight) of the run's only petition."""
    match = re.search(
        r"^  (\S+): tally ([\d,]+); load test: .* ([\d,]+) accepted, .* ([\d,]+) in flight at stop",
        output,
        re.MULTILINE,
    )
    assert match is not None, output
    petition, tally, accepted, in_flight = match.groups()
    return petition, *(int(n.replace(",", "")) for n in (tally, accepted, in_flight))  # type: ignore[return-value]


def invalidate(system: SystemClient, petition: str, how_many: int) -> None:
    signers = [row.signer for row in petition_rows(system.cassandra, petition, "signer")][:how_many]
    assert len(signers) == how_many
    reply = system.signing.InvalidateSignatures(
        signing_pb2.InvalidateSignaturesRequest(petition_id=petition, reason="behind the load test", signers=signers),
        metadata=system.admin(),
        timeout=30,
    )
    assert reply.published == how_many


@pytest.mark.timeout(240)
def test_one_process_run_stopped_mid_call_passes_and_a_short_tally_fails(
    system: SystemClient, slow_signing: tuple[str, DelayingProxy]
) -> None:
    address, proxy = slow_signing
    code, output = short_run(system, address, workers=0)
    assert code == 0, output
    in_flight = in_flight_at_stop(output)
    petition, tally, accepted, petition_in_flight = petition_line(output)
    assert in_flight > 0, output
    assert petition_in_flight == in_flight, output
    # Calls cut off at the stop were signed all the same (the proxy had
    # forwarded them): the old exact check would have cried MISMATCH here.
    assert accepted < tally <= accepted + in_flight, output
    assert proxy.signs_forwarded >= tally

    # One signature more than the unseen answers can explain disappears.
    invalidate(system, petition, tally - accepted + 1)
    code, output = run_locust(system, "--check", str(run_directory(output)))
    assert code == 1, output
    assert f"{petition}: tally {accepted - 1:,};" in output, output
    assert "<-- FAILED: 1 ACCEPTED signature(s) not counted" in output, output
    assert "tally check: FAILED (accepted <= tally" in output, output


@pytest.mark.timeout(240)
def test_distributed_run_stopped_mid_call_passes_and_a_lost_ledger_fails(
    system: SystemClient, slow_signing: tuple[str, DelayingProxy]
) -> None:
    address, _ = slow_signing
    code, output = short_run(system, address, workers=2)
    assert code == 0, output
    assert in_flight_at_stop(output) > 0, output
    directory = run_directory(output)
    ledgers = sorted(directory.glob("ledger-worker-*.json"))
    assert len(ledgers) == 2, output

    ledgers[0].unlink()
    code, output = run_locust(system, "--check", str(directory))
    assert code == 1, output
    assert "tally check: FAILED, 2 Locust process(es) ran users but 1 ledger(s) were written" in output, output
