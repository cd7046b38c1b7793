"""The answers aiohttp gives on its own, before any middleware runs: a
request its HTTP parser cannot read (a control character in a header, a
negative Content-Length, a line over 8 KiB, TLS on the plain port), or a
handler failing past every middleware.

aiohttp's RequestHandler answers those through handle_error, in plain text,
over HTTP/1.0, without the app's response signals (no route matched, so
on_response_prepare does not run), and echoing the bytes it could not parse.
The gateway runs its own small subclass instead, so these answers too carry
the documented error body and the security headers, say HTTP/1.1, and are
logged and counted like every other answer.

The classes plug into aiohttp where it is built to be extended: AppRunner
makes its Server in _make_server (BaseRunner's abstract method), and a
Server is the protocol factory that makes one RequestHandler per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import ERROR, RequestHandler

from services.gateway.http_errors import ApiError, error_response, from_parser_error, internal_error
from services.gateway.metric_defs import HTTP_REQUESTS
from services.gateway.request_context import AnswerBrokenOff, security_headers
from services.gateway.settings import GatewaySettings

log = structlog.get_logger()

# The route label of requests that never got as far as routing.
UNPARSED = "unparsed"
# aiohttp builds the request of a parser error from this placeholder
# message; its HTTP/1.0 would make the answer's status line HTTP/1.0. The
# client's version is unknown (it could not be read): answer in the
# version the gateway speaks, and close the connection.
_UNPARSED_MESSAGE = ERROR._replace(version=HttpVersion11)

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"], web.BaseRequest
]


def _answer_in_http11(factory: RequestFactory) -> RequestFactory:
    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return factory(_UNPARSED_MESSAGE if message is ERROR else message, payload, protocol, writer, task)

    return make


class GatewayRequestHandler(RequestHandler):
    """aiohttp's protocol, with the gateway's answer for what it refuses."""

    def __init__(self, manager: web.Server, *, settings: GatewaySettings, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._settings = settings

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer is out: aiohttp closes the connection on this.
            raise ConnectionError("an answer was already being sent; the connection is closed instead")
        error: ApiError
        if isinstance(exc, HttpProcessingError):
            error = from_parser_error(status, exc)
            HTTP_REQUESTS.labels(UNPARSED, request.method, str(error.http_status)).inc()
            # Anything that is not HTTP at all, sent first on a connection, is
            # the internet's background noise (scanners, TLS to port 80).
            noise = isinstance(exc, BadHttpMethod) and self._request_count == 1
            (log.debug if noise else log.info)(
                "http request",
                method=request.method,
                route=UNPARSED,
                status=error.http_status,
                reason=error.reason,
                detail=error.message,
            )
        elif status == 504:
            error = ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "the request ran out of time")
        else:
            if isinstance(exc, ConnectionError):
                # The client left mid-request: nobody reads this answer.
                log.debug("client gone", error=str(exc))
            elif not isinstance(exc, AnswerBrokenOff):
                log.error("request failed past the middlewares", exc_info=exc)
            error = internal_error()
        response = error_response(error)
        security_headers(self._settings, request, response)
        response.force_close()
        return response


class GatewayServer(web.Server):
    """Makes a GatewayRequestHandler for each connection."""

    def __init__(self, handler: Any, *, settings: GatewaySettings, request_factory: RequestFactory, **kwargs: Any):
        super().__init__(handler, request_factory=_answer_in_http11(request_factory), **kwargs)
        self._settings = settings

    @classmethod
    def like(cls, server: web.Server, settings: GatewaySettings) -> GatewayServer:
        """This server made again as a GatewayServer: the same handler,
        request factory and protocol arguments."""
        return cls(
            server.request_handler,
            settings=settings,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, settings=self._settings, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections are GatewayRequestHandlers."""

    def __init__(self, app: web.Application, settings: GatewaySettings, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._settings = settings

    async def _make_server(self) -> web.Server:
        # The app's server as AppRunner makes it (startup run, app frozen),
        # remade as a GatewayServer.
        return GatewayServer.like(await super()._make_server(), self._settings)
