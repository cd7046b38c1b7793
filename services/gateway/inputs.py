"""Reading requests and writing answers: path parameters, JSON bodies, the
request's time budget, and protobuf messages as proto3 JSON.

Bodies are checked field by field so that every mistake comes back as a
field violation a front end can show next to the field, not as one opaque
"bad request".
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.catalogue.model import PETITION_ID, PETITION_ID_RULE
from services.gateway.http_errors import ApiError, Violation, invalid, invalid_fields

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
# Below a second nothing useful can be answered; past ten minutes a client
# has surely gone.
MIN_CLIENT_TIMEOUT_MS = 1_000
MAX_CLIENT_TIMEOUT_MS = 600_000
DECIMAL = re.compile(r"\A[0-9]{1,9}\Z")
STARTED_AT = web.RequestKey("started_at", float)
CLIENT_BUDGET = web.RequestKey("client_budget", float)


def to_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping, with the .proto field names (as the CLI and
    the open data use) and every scalar printed even when zero, so a client
    never has to know proto3's defaults: int64 as strings, enums by name,
    timestamps in RFC 3339."""
    converted: dict[str, Any] = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return converted


def is_text(value: str) -> bool:
    """True when the string can travel in a protobuf string field (UTF-8):
    JSON escapes and undecodable header bytes can produce lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(name: str, value: str, max_length: int) -> str:
    """A query or header value checked before it reaches a backend."""
    if not is_text(value):
        raise invalid(name, "must be valid Unicode text")
    if len(value) > max_length:
        raise invalid(name, f"must be at most {max_length} characters")
    return value


def petition_id(request: web.Request) -> str:
    value = request.match_info.get("petition_id", "")
    if not PETITION_ID.fullmatch(value):
        raise invalid("petition_id", PETITION_ID_RULE)
    return value


@dataclass(frozen=True)
class Field:
    max_length: int
    required: bool = True


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def json_object(request: web.Request, fields: Mapping[str, Field]) -> dict[str, str]:
    """The body as a JSON object of string fields; an empty body is an empty
    object. Every unknown, missing, mistyped or oversized field is reported."""
    body = await request.read()
    if not body.strip():
        document: Any = {}
    else:
        if not _is_json(request.content_type):
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be JSON (Content-Type: application/json)",
                http_status=415,
            )
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_JSON", f"the body is not valid JSON: {error}"
            ) from None
    if not isinstance(document, dict):
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_JSON", "the body must be a JSON object")
    violations: list[Violation] = []
    values: dict[str, str] = {}
    for name in document:
        if name not in fields:
            shown = str(name)[:64] if is_text(str(name)) else "?"
            violations.append(Violation(shown, "is not a field of this request"))
    for name, rule in fields.items():
        value = document.get(name)
        if value is None:
            if rule.required:
                violations.append(Violation(name, "is required"))
        elif not isinstance(value, str):
            violations.append(Violation(name, "must be a string"))
        elif len(value) > rule.max_length:
            violations.append(Violation(name, f"must be at most {rule.max_length} characters"))
        elif not is_text(value):
            violations.append(Violation(name, "must be valid Unicode text"))
        else:
            values[name] = value
    if violations:
        raise invalid_fields(violations)
    return values


def client_budget_seconds(request: web.Request) -> float | None:
    """The time budget the client asked for in X-Request-Timeout-Ms, if any."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
    if not DECIMAL.fullmatch(raw) or not MIN_CLIENT_TIMEOUT_MS <= int(raw) <= MAX_CLIENT_TIMEOUT_MS:
        raise invalid(TIMEOUT_HEADER, f"must be an integer from {MIN_CLIENT_TIMEOUT_MS} to {MAX_CLIENT_TIMEOUT_MS}")
    return int(raw) / 1000


@dataclass(frozen=True)
class Deadline:
    """When this request must be answered by; each gRPC call gets what is left."""

    expires_at: float

    def remaining(self) -> float:
        left = self.expires_at - time.monotonic()
        if left <= 0:
            raise ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "the request ran out of time")
        return left


def deadline(request: web.Request, budget_seconds: float) -> Deadline:
    """The route's budget, shortened by the client's if it asked for less,
    counted from when the request arrived."""
    started = request.get(STARTED_AT, time.monotonic())
    client = request.get(CLIENT_BUDGET)
    budget = budget_seconds if client is None else min(budget_seconds, client)
    return Deadline(started + budget)
