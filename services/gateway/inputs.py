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
from typing import Any, TypeVar, cast

import grpc
from aiohttp import web
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from servicekit.petition_ids import PETITION_ID, PETITION_ID_RULE
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


async def _json_document(request: web.Request) -> Any:
    """The body as JSON; an empty body is an empty object."""
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
    return document


async def json_object(request: web.Request, fields: Mapping[str, Field]) -> dict[str, str]:
    """The body as a JSON object of string fields; an empty body is an empty
    object. Every unknown, missing, mistyped or oversized field is reported."""
    document = await _json_document(request)
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


_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
}
_INT32_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
}
# proto3 JSON writes a 64-bit integer as a string; a number is taken too.
_INT64_TEXT = re.compile(r"\A-?[0-9]{1,19}\Z")
TIMESTAMP = "google.protobuf.Timestamp"


def _integer_violation(value: Any, bits: int) -> str | None:
    if isinstance(value, str) and bits == 64 and _INT64_TEXT.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        return "must be an integer" + (" (a number or a string of digits)" if bits == 64 else "")
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        return f"must fit in {bits} bits"
    return None


def _single_violation(field: FieldDescriptor, value: Any, path: str, violations: list[Violation]) -> None:
    """Checks one value of a field (one element of a repeated field)."""
    problem: str | None = None
    if field.message_type is not None:
        if field.message_type.full_name == TIMESTAMP:
            if not isinstance(value, str):
                problem = "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z"
            else:
                try:
                    Timestamp().FromJsonString(value)
                except ValueError:
                    problem = "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z"
        else:
            _message_violations(value, field.message_type, path, frozenset(), violations)
    elif field.enum_type is not None:
        names = [v.name for v in field.enum_type.values]
        if not isinstance(value, str) or value not in names:
            problem = f"must be one of {', '.join(names)}"
    elif field.type in _INT64_TYPES:
        problem = _integer_violation(value, 64)
    elif field.type in _INT32_TYPES:
        problem = _integer_violation(value, 32)
    elif field.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            problem = "must be true or false"
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problem = "must be a number"
    elif field.type == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            problem = "must be a string"
        elif not is_text(value):
            problem = "must be valid Unicode text"
    else:
        # No request of the API has such a field (bytes, unsigned).
        problem = "is not accepted over HTTP"
    if problem is not None:
        violations.append(Violation(path, problem))


def _message_violations(
    document: Any, descriptor: Descriptor, prefix: str, omit: frozenset[str], violations: list[Violation]
) -> None:
    if not isinstance(document, dict):
        violations.append(Violation(prefix or "body", "must be a JSON object"))
        return
    for name, value in document.items():
        path = f"{prefix}.{name}" if prefix else str(name)
        field = descriptor.fields_by_name.get(name) if isinstance(name, str) else None
        if field is None or (not prefix and name in omit):
            shown = path[:64] if is_text(path) else "?"
            violations.append(Violation(shown, "is not a field of this request"))
            continue
        if value is None:
            # proto3 JSON reads null as "not set"; one spelling only here.
            violations.append(Violation(path, "must be left out rather than null"))
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            violations.append(Violation(path, "is not accepted over HTTP"))
        elif field.is_repeated:
            if not isinstance(value, list):
                violations.append(Violation(path, "must be an array"))
                continue
            for index, item in enumerate(value):
                _single_violation(field, item, f"{path}[{index}]", violations)
        else:
            _single_violation(field, value, path, violations)


MessageT = TypeVar("MessageT", bound=Message)


async def message_body(request: web.Request, message: MessageT, omit: frozenset[str] = frozenset()) -> MessageT:
    """The body as the proto3 JSON of a request message (.proto field names),
    checked field by field against the message's descriptor so every
    mistake is a field violation with its path ("rejection.reason_code",
    "outcome.links[1]"), then read into `message`. Fields in omit (the
    path's petition_id, a credential) are not the body's. An empty body is
    the message with every field at its default; the service checks the
    values themselves."""
    document = await _json_document(request)
    violations: list[Violation] = []
    _message_violations(document, cast(Descriptor, message.DESCRIPTOR), "", omit, violations)
    if violations:
        raise invalid_fields(violations)
    try:
        ParseDict(document, message)
    except ParseError as error:
        # Checked above field by field; kept as a precise refusal anyway.
        raise invalid("body", str(error)) from None
    return message


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
