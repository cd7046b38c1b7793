"""What every request goes through: measuring and logging, turning any
failure into the documented error body, the client's address and time
budget, the body size limit, CORS, and the headers that keep browsers safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestPayloadError

from servicekit.errors import DomainError
from services.gateway.client_ip import ClientAddress
from services.gateway.http_errors import (
    BROKEN_BODY,
    ApiError,
    error_response,
    from_domain,
    from_http_exception,
    internal_error,
)
from services.gateway.inputs import CLIENT_BUDGET, STARTED_AT, TIMEOUT_HEADER, client_budget_seconds
from services.gateway.metric_defs import HTTP_LATENCY, HTTP_REQUESTS
from services.gateway.settings import GatewaySettings

log = structlog.get_logger()

CLIENT_IP = web.RequestKey("client_ip", str)

# PATCH: an author front end on another origin edits drafts (with Bearer).
CORS_METHODS = "GET, POST, PATCH, DELETE"
CORS_HEADERS = f"Authorization, Content-Type, Idempotency-Key, {TIMEOUT_HEADER}"
CORS_EXPOSED = "ETag, Retry-After"
# The page loads nothing from elsewhere and is never framed.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# A client that hangs up gets nothing; logs and metrics say so (nginx's 499).
CLIENT_CLOSED = 499


class AnswerBrokenOff(Exception):
    """The answer failed after some of it was sent: nothing else can be said
    on this connection, which aiohttp closes (its handle_error refuses to
    answer once bytes are out)."""


async def _send(request: web.Request, response: web.StreamResponse) -> tuple[web.StreamResponse, int]:
    """Prepares and finishes the answer inside the middleware, instead of
    leaving it to aiohttp once the middleware has returned: a header aiohttp
    refuses, or any other failure to send, is then logged as an error and
    counted as the 500 the client got, not as the status the handler chose.
    Returns what to hand to aiohttp (a 500 when nothing was sent yet) and
    the status the client sees."""
    if not response.prepared and request.writer.output_size > 0:
        # A streamed answer failed half-way and a handler answered again.
        log.error("answer broke off while streaming", method=request.method, route=route_of(request))
        raise AnswerBrokenOff("the answer broke off after it began")
    try:
        await response.prepare(request)
        await response.write_eof()
    except asyncio.CancelledError:
        raise
    except ConnectionError:
        # The client went away: aiohttp, finding the same, drops the
        # connection quietly.
        return response, CLIENT_CLOSED
    except Exception:
        log.exception(
            "answer could not be sent", method=request.method, route=route_of(request), status=response.status
        )
        if request.writer.output_size > 0:
            raise AnswerBrokenOff("the answer broke off after it began") from None
        return error_response(internal_error()), 500
    return response, response.status


def route_of(request: web.Request) -> str:
    """The route pattern (bounded), never the path (it holds ids)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _is_stream(request: web.Request) -> bool:
    return route_of(request).endswith("/tally/live")


def middlewares(settings: GatewaySettings) -> list[Middleware]:
    addresses = ClientAddress(settings.trusted_proxy_header, settings.proxy_networks)
    allowed_origins = frozenset(settings.cors_origins)

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            response, status = await _send(request, response)
            return response
        except web.HTTPException as exception:
            # Only redirects get here: answer_errors turns the rest into bodies.
            status = exception.status
            raise
        except AnswerBrokenOff:
            status = 500
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status = CLIENT_CLOSED
            raise
        finally:
            route = route_of(request)
            HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
            elapsed = time.perf_counter() - started
            if not _is_stream(request):
                HTTP_LATENCY.labels(route).observe(elapsed)
            # Reads are the refresh storm: kept out of the log unless they fail.
            level = "debug" if request.method in ("GET", "HEAD") and status < 400 else "info"
            getattr(log, level)(
                "http request", method=request.method, route=route, status=status, ms=round(elapsed * 1000, 1)
            )

    @web.middleware
    async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error)
        except DomainError as error:
            return error_response(from_domain(error))
        except web.HTTPException as exception:
            if exception.status < 400:
                raise
            response = error_response(from_http_exception(exception))
            if hdrs.ALLOW in exception.headers:
                response.headers[hdrs.ALLOW] = exception.headers[hdrs.ALLOW]
            return response
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            raise
        except RequestPayloadError:
            # The body broke off or broke its framing while being read: the
            # client's fault, found after the headers were parsed.
            return error_response(ApiError(grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST", BROKEN_BODY))
        except Exception:
            log.exception("request failed", method=request.method, route=route_of(request))
            return error_response(internal_error())

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answers CORS preflights for /api/ before routing (no route takes OPTIONS)."""
        origin = request.headers.get(hdrs.ORIGIN)
        if (
            request.method != "OPTIONS"
            or origin is None
            or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers
            or not request.path.startswith("/api/")
        ):
            return await handler(request)
        if origin not in allowed_origins:
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "CORS_ORIGIN_NOT_ALLOWED",
                "this origin may not call the API from a browser",
            )
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: CORS_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: "600",
            },
        )

    @web.middleware
    async def context(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[STARTED_AT] = time.monotonic()
        budget = client_budget_seconds(request)
        if budget is not None:
            request[CLIENT_BUDGET] = budget
        # Refused before a byte of it is read; a body without a length is
        # cut at the same size by aiohttp's client_max_size while reading.
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(settings.max_body_bytes, request.content_length)
        header = settings.trusted_proxy_header
        request[CLIENT_IP] = addresses.of(request.remote, request.headers.getall(header, []) if header else [])
        return await handler(request)

    return [observe, answer_errors, preflight, context]


def security_headers(settings: GatewaySettings, request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Headers every answer gets; idempotent, since an answer aiohttp's
    parser gave (services/gateway/protocol.py) gets them directly."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html":
        headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        headers.setdefault("X-Frame-Options", "DENY")
    if settings.cookie_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    allowed_origins = settings.cors_origins
    if allowed_origins and request.path.startswith("/api/"):
        # Always, so a shared cache never hands one origin's answer
        # (with or without its Allow-Origin) to another.
        if "Origin" not in headers.getall(hdrs.VARY, ()):
            headers.add(hdrs.VARY, "Origin")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin in allowed_origins:
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSED


def response_headers(settings: GatewaySettings) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """security_headers, set just before each answer is sent (so streams
    and errors get them too)."""

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        security_headers(settings, request, response)

    return add
