"""The one place where an error becomes an HTTP answer.

Whatever went wrong — a backend's gRPC status with its google.rpc details,
one of the gateway's own checks, or the HTTP layer itself (unknown path,
body too large) — the browser gets one JSON shape, documented in the
OpenAPI document as `Error`:

    {"error": {"code": "NOT_FOUND", "reason": "PETITION_NOT_FOUND",
               "message": "petition 'x' does not exist",
               "field_violations": [{"field": "...", "description": "..."}],
               "retry_after_seconds": 1.0}}

`code` is the gRPC canonical code, `reason` the stable ErrorInfo reason a
front end switches on, and a retry delay also becomes a Retry-After header.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, InvalidURLError, LineTooLong, PayloadEncodingError
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from servicekit.errors import DomainError

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Google's published mapping (google/rpc/code.proto), except that a backend
# failing on its own (UNKNOWN, INTERNAL, DATA_LOSS) is a bad gateway here:
# the gateway's own faults are 500.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 502,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 502,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 502,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


class ApiError(Exception):
    """An error answered to an HTTP client. http_status overrides the code's
    status for what only HTTP has words for (405, 413, 415)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        violations: Iterable[Violation] = (),
        retry_after_seconds: float | None = None,
        http_status: int | None = None,
    ):
        super().__init__(f"{code.name} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = tuple(violations)
        self.retry_after_seconds = retry_after_seconds
        self.http_status = http_status if http_status is not None else HTTP_STATUS[code]


def invalid(field: str, description: str, reason: str = "INVALID_FIELD") -> ApiError:
    """A request field that is wrong; the message names the field."""
    return ApiError(
        grpc.StatusCode.INVALID_ARGUMENT, reason, f"{field}: {description}", [Violation(field, description)]
    )


def invalid_fields(violations: list[Violation], reason: str = "INVALID_FIELD") -> ApiError:
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, violations)


def unauthenticated(reason: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def backend_unavailable(backend: str, retry_after_seconds: float = 1.0) -> ApiError:
    return ApiError(
        grpc.StatusCode.UNAVAILABLE,
        "BACKEND_UNAVAILABLE",
        f"the {backend} service is unavailable right now; retry shortly",
        retry_after_seconds=retry_after_seconds,
    )


def internal_error() -> ApiError:
    return ApiError(
        grpc.StatusCode.INTERNAL, "INTERNAL_ERROR", "the gateway failed to answer; this is a bug", http_status=500
    )


def from_domain(error: DomainError) -> ApiError:
    return ApiError(
        grpc.StatusCode[error.kind.value],
        error.reason,
        error.message,
        [Violation(v.field, v.description) for v in error.violations],
        error.retry_after_seconds,
    )


def _rich_status(metadata: Any) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


# What to say when a backend answered without ErrorInfo: a transport or
# server fault whose raw text (addresses, stack) is not for browsers.
_BARE_REASONS: dict[grpc.StatusCode, tuple[str, str]] = {
    grpc.StatusCode.UNAVAILABLE: (
        "BACKEND_UNAVAILABLE",
        "the {backend} service is unavailable right now; retry shortly",
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("DEADLINE_EXCEEDED", "the {backend} service did not answer in time"),
    grpc.StatusCode.CANCELLED: ("CANCELLED", "the request was cancelled"),
    grpc.StatusCode.UNKNOWN: ("BACKEND_FAILED", "the {backend} service failed to answer"),
    grpc.StatusCode.INTERNAL: ("BACKEND_FAILED", "the {backend} service failed to answer"),
    grpc.StatusCode.DATA_LOSS: ("BACKEND_FAILED", "the {backend} service failed to answer"),
    grpc.StatusCode.UNIMPLEMENTED: ("NOT_IMPLEMENTED", "the {backend} service does not offer this call"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("BACKEND_OVERLOADED", "the {backend} service is overloaded; retry shortly"),
}


def from_rpc_error(error: grpc.aio.AioRpcError, backend: str) -> ApiError:
    """The API error for a failed call to a backend, with the reason, field
    violations and retry delay the backend attached as google.rpc details."""
    code = error.code()
    rich = _rich_status(error.trailing_metadata())
    reason = ""
    violations: list[Violation] = []
    retry: float | None = None
    for detail in rich.details if rich is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [Violation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_retry = error_details_pb2.RetryInfo()
            detail.Unpack(info_retry)
            retry = info_retry.retry_delay.ToTimedelta().total_seconds()
    if reason:
        return ApiError(code, reason, error.details() or code.name, violations, retry)
    bare_reason, template = _BARE_REASONS.get(code, (code.name, "the {backend} service refused the request"))
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED) and retry is None:
        retry = 1.0
    return ApiError(code, bare_reason, template.format(backend=backend), violations, retry)


def from_http_exception(exception: web.HTTPException) -> ApiError:
    """aiohttp's own refusals (no route, wrong method, body too large)."""
    status = exception.status
    if status == 404:
        return ApiError(grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND", "there is no such endpoint", http_status=404)
    if status == 405:
        return ApiError(
            grpc.StatusCode.UNIMPLEMENTED,
            "METHOD_NOT_ALLOWED",
            "this endpoint does not take this method",
            http_status=405,
        )
    if status == 413:
        return ApiError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "BODY_TOO_LARGE", "the request body is too large", http_status=413
        )
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST", exception.reason, http_status=status)


BROKEN_BODY = "the request body could not be read: its length, chunked framing or Content-Encoding is broken"
# The part of an aiohttp parser message before its first colon is the
# parser's own words ("Invalid header value char"); what follows echoes the
# request's bytes, which may hold a cookie, and is never repeated.
_PARSER_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9 -]{0,79}")


def from_parser_error(status: int, exception: BaseException | None) -> ApiError:
    """A request aiohttp's HTTP parser could not read: what was wrong, in
    general words, without echoing any of it."""
    if isinstance(exception, LineTooLong):
        limit = exception.args[1] if len(exception.args) > 1 and isinstance(exception.args[1], int) else None
        return ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "LINE_TOO_LONG",
            f"the request line or a header line is longer than {limit or 'the limit of'} bytes",
            http_status=status,
        )
    if isinstance(exception, BadHttpMethod) and exception.line.startswith("\x16\x03"):
        message = "this port speaks plain HTTP, not TLS"
    elif isinstance(exception, BadStatusLine):
        message = "the request line is not an HTTP/1.1 request line"
    elif isinstance(exception, InvalidURLError):
        message = "the request target is not a valid URL"
    elif isinstance(exception, PayloadEncodingError):
        message = BROKEN_BODY
    else:
        words = str(getattr(exception, "message", "")).split(":", 1)[0].strip()
        message = "the request is not valid HTTP/1.1"
        if _PARSER_WORDS.fullmatch(words):
            message += f" ({words[0].lower()}{words[1:]})"
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST", message, http_status=status)


def error_body(error: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": error.code.name,
        "reason": error.reason,
        "message": error.message,
        "field_violations": [{"field": v.field, "description": v.description} for v in error.violations],
    }
    if error.retry_after_seconds is not None:
        body["retry_after_seconds"] = error.retry_after_seconds
    return {"error": body}


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; rounding down would invite a retry too early."""
    return str(max(1, math.ceil(seconds)))


def error_response(error: ApiError) -> web.Response:
    response = web.json_response(error_body(error), status=error.http_status)
    response.headers["Cache-Control"] = "no-store"
    if error.retry_after_seconds is not None:
        response.headers["Retry-After"] = retry_after_header(error.retry_after_seconds)
    return response
