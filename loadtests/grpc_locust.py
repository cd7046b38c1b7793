"""gRPC for Locust: a client interceptor that reports every RPC to Locust,
and a User base class whose stubs go through it (Locust's documented gRPC
pattern).

Locust runs users as gevent greenlets, so grpcio must be told to cooperate
with gevent (`grpc.experimental.gevent.init_gevent()`) before any channel
exists; importing this module does that, and the locustfile imports it
first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import grpc
import grpc.experimental.gevent
from locust import User
from locust.env import Environment

grpc.experimental.gevent.init_gevent()


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Fires Locust's `request` event around each unary call: the RPC's short
    name (Sign, GetTally) so the UI and CSV show one row per RPC, the time
    in ms, and the grpc.RpcError as the failure. An answer such as
    ALREADY_SIGNED is a successful RPC and counts as one."""

    def __init__(self, environment: Environment):
        self._environment = environment

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        began = time.perf_counter()
        exception: grpc.RpcError | None = None
        response_length = 0
        outcome = continuation(client_call_details, request)
        try:
            response_length = outcome.result().ByteSize()
        except grpc.RpcError as error:
            exception = error
        self._environment.events.request.fire(
            request_type="grpc",
            name=str(client_call_details.method).rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - began) * 1000,
            response_length=response_length,
            response=outcome,
            context=None,
            exception=exception,
        )
        # The stub calls .result() on this, which raises the RpcError again
        # for the user's own handling.
        return outcome


class GrpcUser(User):
    """A Locust user with intercepted gRPC channels.

    Channels are shared by all users of one Locust process and address:
    thousands of virtual users each with its own HTTP/2 connection would
    measure connection set-up on this 2-core machine rather than the
    service, and a real front end (the gateway) multiplexes its users over
    a few connections too."""

    abstract = True
    _channels: ClassVar[dict[str, grpc.Channel]] = {}

    def channel(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.intercept_channel(grpc.insecure_channel(address), LocustInterceptor(self.environment))
            self._channels[address] = channel
        return channel
