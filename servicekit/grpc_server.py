"""gRPC server bootstrap shared by every service.

ServiceServer is a grpc.aio server with health checking, reflection, and
one interceptor that measures every RPC and turns DomainError into a status
with google.rpc details. ServiceServer.stop() reports NOT_SERVING, then
drains in-flight RPCs within a grace period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from servicekit.errors import DomainError, ErrorKind
from servicekit.metric_defs import RPC_LATENCY, RPC_REQUESTS
from servicekit.settings import ServiceSettings

ERROR_DOMAIN = "petitions.v1"

_CODES: dict[ErrorKind, grpc.StatusCode] = {kind: grpc.StatusCode[kind.value] for kind in ErrorKind}


def status_for(error: DomainError) -> grpc.Status:
    """The gRPC status for a domain error, with ErrorInfo, BadRequest and
    RetryInfo details so that clients can show a precise message."""
    details: list[Any] = [error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)]
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=error.retry_after_seconds))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    code = _CODES[error.kind]
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=packed)
    status: grpc.Status = rpc_status.to_status(proto)
    return status


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC and maps DomainError to its status."""

    def __init__(self) -> None:
        # Wrapped once per method, not once per call.
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = _wrap(handler, handler_call_details.method.rsplit("/", 1)[-1])
        self._wrapped[handler_call_details.method] = wrapped
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    if method in ("Check", "Watch", "ServerReflectionInfo"):
        return handler
    deserializer = _tolerant(handler.request_deserializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(method, handler.unary_unary),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(method, handler.unary_stream),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler can
    answer INVALID_ARGUMENT instead of gRPC's bare UNKNOWN."""

    reason: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            return _Undecodable(str(error))

    return deserialize


def _reject_undecodable(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise DomainError(
            ErrorKind.INVALID_ARGUMENT,
            "MALFORMED_REQUEST",
            f"the request is not a valid protobuf message: {request.reason}",
        )


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else str(code)


def _wrap_unary(method: str, behaviour: Any) -> Any:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            _reject_undecodable(request)
            response = await behaviour(request, context)
            code = _code_of(context)
            return response
        except DomainError as error:
            status = status_for(error)
            code = status.code.name
            await context.abort(status.code, status.details, status.trailing_metadata)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = _code_of(context)
            raise
        finally:
            RPC_REQUESTS.labels(method, code).inc()
            RPC_LATENCY.labels(method).observe(time.perf_counter() - started)

    return handle


def _wrap_stream(method: str, behaviour: Any) -> Any:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        code = "UNKNOWN"
        try:
            _reject_undecodable(request)
            async for item in behaviour(request, context):
                yield item
            code = _code_of(context)
        except DomainError as error:
            status = status_for(error)
            code = status.code.name
            await context.abort(status.code, status.details, status.trailing_metadata)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            RPC_REQUESTS.labels(method, code).inc()

    return handle


class ServiceServer:
    """A grpc.aio server plus its health servicer, bound to the settings' address
    (and to the process's own address, when it has one)."""

    def __init__(self, service_names: Iterable[str], settings: ServiceSettings):
        self.server = grpc.aio.server(
            interceptors=[ServiceInterceptor()],
            options=[("grpc.so_reuseport", 1 if settings.grpc_shared_address else 0)],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._names = list(service_names)
        reflection.enable_server_reflection([*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.port = self._bind(settings.grpc_address)
        if settings.grpc_process_address:
            self._bind(settings.grpc_process_address)

    def _bind(self, address: str) -> int:
        # grpc.aio raises where the sync server returns 0; either way the
        # process cannot serve, and says why in one line.
        try:
            port = self.server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise SystemExit(f"cannot bind gRPC address {address}: it is in use or not an address of this host")
        return port

    async def start(self) -> None:
        await self.server.start()
        for name in ["", *self._names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_seconds: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
