"""Connections to the gRPC services behind the gateway.

Each backend gets a small pool of channels, each with its own TCP connection
(a local subchannel pool: by default gRPC would share one connection between
channels to the same address). Every channel follows the backend's health
with the standard Health.Watch stream, so a backend that is down or draining
(it reports NOT_SERVING before it stops) is known at once: calls to it fail
fast with a clean 503 instead of each waiting for its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petitions.v1 import (
    identity_pb2,
    identity_pb2_grpc,
    petitions_pb2,
    petitions_pb2_grpc,
    signing_pb2,
    signing_pb2_grpc,
    tally_pb2,
    tally_pb2_grpc,
)
from services.gateway.http_errors import backend_unavailable, from_rpc_error
from services.gateway.metric_defs import BACKEND_UP
from services.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from petitions.v1.identity_pb2_grpc import IdentityAsyncStub
    from petitions.v1.petitions_pb2_grpc import PetitionsAsyncStub
    from petitions.v1.signing_pb2_grpc import SigningAsyncStub
    from petitions.v1.tally_pb2_grpc import TallyAsyncStub

log = structlog.get_logger()

StubT = TypeVar("StubT")
R = TypeVar("R")

# Reads are safe to repeat, so gRPC itself retries them when a connection
# broke under them; writes (Sign, the exchanges, every change of a
# petition) are never retried here.
_READS = [
    {"service": "petitions.v1.Petitions", "method": method}
    for method in (
        "GetPetition",
        "ListPetitions",
        "GetAuditTrail",
        "SuggestCommittee",
        "ListPetitionTypes",
        "ListCommittees",
    )
] + [{"service": "petitions.v1.Tally", "method": "GetTally"}]
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": _READS,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    # A restarted backend is found again within seconds, not gRPC's
    # default two minutes of backoff.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]
HEALTH_RETRY_SECONDS = 0.5


class Backend(Generic[StubT]):
    """One gRPC service: a pool of channels and what each says of its health."""

    def __init__(
        self, name: str, address: str, service: str, make_stub: Callable[[grpc.aio.Channel], StubT], size: int
    ):
        self.name = name
        self.address = address
        self._service = service
        self._make_stub = make_stub
        self._size = max(1, size)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[StubT] = []
        self._serving: list[bool] = []
        self._answered: list[asyncio.Event] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._turn = 0

    async def start(self, wait_seconds: float) -> None:
        """Opens the channels and waits (at most wait_seconds) until each has
        heard from the backend once, so a gateway started after its backends
        is ready at once; one started before them is not held up."""
        for index in range(self._size):
            channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            self._stubs.append(self._make_stub(channel))
            self._serving.append(False)
            self._answered.append(asyncio.Event())
            self._watchers.append(asyncio.create_task(self._follow_health(index), name=f"health-{self.name}-{index}"))
        BACKEND_UP.labels(self.name).set(0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                await asyncio.gather(*(answered.wait() for answered in self._answered))

    async def stop(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for channel in self._channels:
            await channel.close()

    @property
    def serving(self) -> bool:
        return any(self._serving)

    def stub(self) -> StubT:
        """A stub on a healthy channel, round robin; a clean UNAVAILABLE
        error when no channel is healthy."""
        healthy = [index for index, serving in enumerate(self._serving) if serving]
        if not healthy:
            raise backend_unavailable(self.name)
        self._turn += 1
        return self._stubs[healthy[self._turn % len(healthy)]]

    async def call(self, rpc: Callable[[StubT], Awaitable[R]]) -> R:
        """Runs one unary call on a healthy channel; a failure becomes the
        API error with the backend's details."""
        stub = self.stub()
        try:
            return await rpc(stub)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, self.name) from None

    def _mark(self, index: int, serving: bool) -> None:
        was = self.serving
        self._serving[index] = serving
        self._answered[index].set()
        if was != self.serving:
            if self.serving:
                log.info("backend serving", backend=self.name, address=self.address)
            else:
                log.warning("backend not serving", backend=self.name, address=self.address)
        BACKEND_UP.labels(self.name).set(1 if self.serving else 0)

    async def _follow_health(self, index: int) -> None:
        health = health_pb2_grpc.HealthStub(self._channels[index])
        request = health_pb2.HealthCheckRequest(service=self._service)
        while True:
            try:
                async for reply in health.Watch(request):
                    self._mark(index, reply.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.aio.AioRpcError as error:
                log.debug("health watch ended", backend=self.name, code=error.code().name)
            # The stream ended: until a new one answers, the channel cannot be
            # trusted. The channel reconnects on its own (with backoff).
            self._mark(index, False)
            await asyncio.sleep(HEALTH_RETRY_SECONDS)


def _service_name(module: Any, service: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


class Backends:
    """The four services the gateway talks to."""

    def __init__(self, settings: GatewaySettings):
        size = settings.backend_channels
        self._wait = settings.backend_start_wait_seconds
        self.identity: Backend[IdentityAsyncStub] = Backend(
            "identity",
            settings.identity_address,
            _service_name(identity_pb2, "Identity"),
            lambda channel: identity_pb2_grpc.IdentityStub(channel),
            size,
        )
        self.signing: Backend[SigningAsyncStub] = Backend(
            "signing",
            settings.signing_address,
            _service_name(signing_pb2, "Signing"),
            lambda channel: signing_pb2_grpc.SigningStub(channel),
            size,
        )
        self.tally: Backend[TallyAsyncStub] = Backend(
            "tally",
            settings.tally_address,
            _service_name(tally_pb2, "Tally"),
            lambda channel: tally_pb2_grpc.TallyStub(channel),
            size,
        )
        self.petitions: Backend[PetitionsAsyncStub] = Backend(
            "petitions",
            settings.petitions_address,
            _service_name(petitions_pb2, "Petitions"),
            lambda channel: petitions_pb2_grpc.PetitionsStub(channel),
            size,
        )

    def all(self) -> tuple[Backend[Any], ...]:
        return (self.identity, self.signing, self.tally, self.petitions)

    def needed_to_sign(self) -> tuple[Backend[Any], ...]:
        """What signing through the gateway needs: the petitions service may
        be down while people keep signing (signing has its own view)."""
        return (self.identity, self.signing, self.tally)

    async def start(self) -> None:
        await asyncio.gather(*(backend.start(self._wait) for backend in self.all()))

    async def stop(self) -> None:
        for backend in self.all():
            await backend.stop()

    def serving(self) -> dict[str, bool]:
        return {backend.name: backend.serving for backend in self.all()}
