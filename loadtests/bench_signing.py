"""Sign throughput and latency against the running local system (`make up`),
next to the same load against a bare grpc.aio echo service, in one run.

    .venv/bin/python -m loadtests.bench_signing [--seconds 20] [--concurrency 64]

Signer credentials are minted in-process with the local identity key (the
verification signing does is the real one); each Sign is a new person on one
hot petition, so every call goes the whole way to Kafka's acknowledgement.
Prints accepted signatures/s, p50/p99 latency, the echo ceiling measured the
same way, and their ratio. The client shares the machine's cores with the
whole stack, so read the ratio rather than the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loadtests.petition_admin import create_petition
from petitions.v1 import signing_pb2, signing_pb2_grpc
from servicekit import signer_credential, territories
from servicekit.settings import REPO_ROOT
from servicekit.signer_credential import SignerClaims

SECRETS = REPO_ROOT / ".run" / "secrets"
SIGNING = "127.0.0.1:50062"
ECHO_METHOD = "/bench.Echo/Echo"
# Client connections: `make up` runs two signing processes on one port, and
# the kernel gives each connection (not each call) to one of them.
CONNECTIONS = 8


def signing_key(secrets: Path = SECRETS) -> Ed25519PrivateKey:
    """Identity's newest credential key (the one it issues with), read from
    the secrets directory, so credentials can be minted in-process."""
    keys = sorted((secrets / "identity-keys").glob("*.pem"))
    return signer_credential.load_private_key(keys[-1].read_bytes())


def mint_credentials(count: int) -> list[str]:
    key = signing_key()
    places = territories.codes()
    return [
        signer_credential.issue(
            key, SignerClaims(uuid.uuid4().hex, "oidc", "bench", "FR", places[i % len(places)], True), 3600
        )[0]
        for i in range(count)
    ]


async def drive(
    call: Callable[[int], Awaitable[bool]], seconds: float, concurrency: int
) -> tuple[int, list[float], int]:
    """Runs `concurrency` loops of call(i) for `seconds`; returns successes,
    latencies and failures."""
    latencies: list[float] = []
    failures = 0
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter, failures
        while time.perf_counter() < deadline:
            counter += 1
            began = time.perf_counter()
            if await call(counter):
                latencies.append(time.perf_counter() - began)
            else:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, failures


@contextlib.asynccontextmanager
async def channels(address: str, count: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    """count channels to address, each on a connection of its own (as many
    gateway processes would hold), so that several server processes
    sharing the port with SO_REUSEPORT all get a share of the calls."""
    opened = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]
    try:
        yield opened
    finally:
        await asyncio.gather(*(channel.close() for channel in opened))


async def bench_signing(
    seconds: float, concurrency: int, credentials: list[str], petition: str, connections: int = CONNECTIONS
) -> tuple[int, list[float], int]:
    async with channels(SIGNING, connections) as opened:
        stubs = [signing_pb2_grpc.SigningStub(channel) for channel in opened]

        async def sign(i: int) -> bool:
            try:
                reply = await stubs[i % len(stubs)].Sign(
                    signing_pb2.SignRequest(credential=credentials[i % len(credentials)], petition_id=petition),
                    timeout=30,
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED)

        return await drive(sign, seconds, concurrency)


def serve_echo(port: int, ready: multiprocessing.synchronize.Event) -> None:
    async def serve() -> None:
        async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return request

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(serve())


@contextlib.contextmanager
def echo_service(port: int) -> Iterator[int]:
    """A bare grpc.aio echo service on port, in a process of its own (so it
    does not share the load generator's core), for as long as the block runs."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=serve_echo, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the echo service did not start within 60 s")
        yield port
    finally:
        server.terminate()
        server.join(10)


async def bench_echo(
    seconds: float, concurrency: int, port: int, payload: bytes, connections: int = CONNECTIONS
) -> tuple[int, list[float], int]:
    async with channels(f"127.0.0.1:{port}", connections) as opened:
        echoes: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
            channel.unary_unary(ECHO_METHOD) for channel in opened
        ]

        async def call(i: int) -> bool:
            try:
                await echoes[i % len(echoes)](payload, timeout=30)
            except grpc.aio.AioRpcError:
                return False
            return True

        return await drive(call, seconds, concurrency)


def percentiles(latencies: list[float]) -> list[float]:
    """The 99 percentile cut points of latencies (all 0.0 below two samples)."""
    return statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99


def report(name: str, done: int, latencies: list[float], failures: int, seconds: float) -> float:
    rate = done / seconds
    cuts = percentiles(latencies)
    print(f"{name:8} {rate:9.0f}/s  p50 {cuts[49] * 1000:7.1f} ms  p99 {cuts[98] * 1000:7.1f} ms  failures {failures}")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--echo-port", type=int, default=50099)
    parser.add_argument(
        "--connections",
        type=int,
        default=CONNECTIONS,
        help="client connections, so that every signing process gets calls",
    )
    options = parser.parse_args()
    if not Path(SECRETS / "ip-hash.key").exists():
        print("run `make up` first", file=sys.stderr)
        return 1

    credentials = mint_credentials(int(options.seconds * 4000))
    petition = create_petition()
    sign_done, sign_latencies, sign_failures = asyncio.run(
        bench_signing(options.seconds, options.concurrency, credentials, petition, options.connections)
    )

    payload = signing_pb2.SignRequest(credential=credentials[0], petition_id=petition).SerializeToString()
    with echo_service(options.echo_port) as port:
        echo_done, echo_latencies, echo_failures = asyncio.run(
            bench_echo(options.seconds, options.concurrency, port, payload, options.connections)
        )

    print(
        f"{options.seconds:g} s each, {options.concurrency} calls in flight over {options.connections} connections,"
        f" petition {petition}"
    )
    signing_rate = report("Sign", sign_done, sign_latencies, sign_failures, options.seconds)
    echo_rate = report("echo", echo_done, echo_latencies, echo_failures, options.seconds)
    print(f"Sign / echo ratio: {signing_rate / echo_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
