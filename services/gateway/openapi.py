"""The gateway's OpenAPI document, kept in the repo as openapi.json.

Message shapes are derived from the protobuf descriptors, following the
proto3 JSON mapping exactly as the gateway prints it (.proto field names,
every field without presence always printed, int64 as strings, enums by
name, timestamps in RFC 3339), so proto/ stays the one definition. The paths are those of the
route table the router is built from (routes.py), so a route is served
exactly when it is documented; the error body is written here.

    python -m services.gateway.openapi           rewrite openapi.json
    python -m services.gateway.openapi --check   fail if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, cast

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from petitions.v1 import identity_pb2, petition_pb2, petitions_pb2, signing_pb2, tally_pb2
from services.gateway.auth import AUTHOR_COOKIE, CREDENTIAL_COOKIE
from services.gateway.pages import OPENAPI_FILE
from services.gateway.routes import ROUTES, Answer, Body, MessageBody, Operation, Parameter

Schema = dict[str, Any]

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_INT32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
TIMESTAMP = "google.protobuf.Timestamp"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


class Components:
    """Collects one schema per protobuf message used by the API: as answered
    (every field without presence always printed, so required), and, named
    <Message>Input, as a request body takes it (every field optional, a
    64-bit integer as a string or a number, as proto3 JSON reads it)."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def message(self, descriptor: Descriptor, omit: frozenset[str] = frozenset(), *, as_input: bool = False) -> Schema:
        name = f"{descriptor.name}Input" if as_input else descriptor.name
        if name not in self.schemas:
            self.schemas[name] = {}
            properties: dict[str, Schema] = {}
            required: list[str] = []
            for field in descriptor.fields:
                if field.name in omit:
                    continue
                properties[field.name] = self._field(field, as_input)
                # Fields without presence are always printed; messages only when set.
                if not field.has_presence and not as_input:
                    required.append(field.name)
            self.schemas[name] = {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
            if not required:
                # OpenAPI 3.0 wants a required list to have an element.
                del self.schemas[name]["required"]
        return _ref(name)

    def _field(self, field: FieldDescriptor, as_input: bool) -> Schema:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value, as_input)}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field, as_input)}
        return self._single(field, as_input)

    def _single(self, field: FieldDescriptor, as_input: bool) -> Schema:
        if field.message_type is not None:
            if field.message_type.full_name == TIMESTAMP:
                return {"type": "string", "format": "date-time"}
            return self.message(field.message_type, as_input=as_input)
        if field.enum_type is not None:
            return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
        if field.type in _INT64 and as_input:
            return {
                "oneOf": [{"type": "string", "pattern": "^-?[0-9]+$"}, {"type": "integer", "format": "int64"}],
                "description": "64-bit integer, as a string or a number",
            }
        if field.type in _INT64:
            return {"type": "string", "pattern": "^-?[0-9]+$", "description": "64-bit integer, as a string"}
        if field.type in _INT32:
            return {"type": "integer", "format": "int32"}
        if field.type == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return {"type": "number"}
        if field.type == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return {"type": "string"}


def _error_schema() -> Schema:
    return {
        "type": "object",
        "description": "Every error answer. code is the gRPC canonical code; reason is stable, for programs.",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "reason", "message", "field_violations"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "enum": [code.name for code in grpc.StatusCode if code.name != "OK"]},
                    "reason": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                    "message": {"type": "string"},
                    "field_violations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "description"],
                            "additionalProperties": False,
                            "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                        },
                    },
                    "retry_after_seconds": {"type": "number", "minimum": 0},
                },
            }
        },
    }


def _session_schema() -> Schema:
    return {
        "type": "object",
        "description": (
            "The browser's sign-ins, without the pseudonym or the credential itself: the signer's at the top, "
            "the author's under author (GET and DELETE /api/v1/session always give it)."
        ),
        "required": ["signed_in"],
        "additionalProperties": False,
        "properties": {
            "signed_in": {"type": "boolean"},
            "expires_at": {"type": "string", "format": "date-time"},
            "method": {"type": "string", "enum": list(identity_pb2.VerificationMethod.keys())},
            "country": {"type": "string"},
            "territory": {"type": "string"},
            "adult": {"type": "boolean"},
            "author": {
                "type": "object",
                "required": ["signed_in"],
                "additionalProperties": False,
                "properties": {
                    "signed_in": {"type": "boolean"},
                    "display_name": {"type": "string", "description": "The name published with the petitions."},
                    "expires_at": {"type": "string", "format": "date-time"},
                },
            },
        },
    }


def _counts(*, named: bool = False) -> Schema:
    """Counts by code; territories also carry their French name from the
    reference list (empty for a counted code that is no territory)."""
    properties: dict[str, Schema] = {"code": {"type": "string"}}
    if named:
        properties["name"] = {"type": "string"}
    properties["signatures"] = {"type": "integer"}
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": list(properties),
            "additionalProperties": False,
            "properties": properties,
        },
    }


def _open_data_schema() -> Schema:
    record = {
        "type": "object",
        "required": ["petition_id", "as_of", "total", "by_territory", "by_country", "thresholds_reached"],
        "additionalProperties": False,
        "properties": {
            "petition_id": {"type": "string"},
            "as_of": {"type": "string", "format": "date-time"},
            "total": {"type": "integer"},
            "by_territory": _counts(named=True),
            "by_country": _counts(),
            "thresholds_reached": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["threshold_id", "count", "reached_at"],
                    "additionalProperties": False,
                    "properties": {
                        "threshold_id": {"type": "string"},
                        "count": {"type": "integer"},
                        "reached_at": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    }
    return {
        "type": "object",
        "required": ["petitions"],
        "additionalProperties": False,
        "properties": {"petitions": {"type": "array", "items": record}},
    }


def _body(properties: dict[str, Schema], required: list[str]) -> Schema:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _json(schema)}
    if headers:
        answer["headers"] = headers
    return answer


ERROR = {"$ref": "#/components/responses/Error"}
CACHE_HEADERS = {
    "ETag": {"schema": {"type": "string"}},
    "Cache-Control": {"schema": {"type": "string"}},
}


def _errors(*statuses: int) -> dict[str, Any]:
    """The error answers of an operation: each has the Error body."""
    return {str(status): ERROR for status in sorted({*statuses, 400, 429, 503, 504})} | {"default": ERROR}


def _not_modified() -> dict[str, Any]:
    return {"304": {"description": "The client's copy (If-None-Match) is current.", "headers": CACHE_HEADERS}}


SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "signer": [{"credentialCookie": []}, {"bearer": []}],
    "author": [{"authorCookie": []}, {"authorBearer": []}],
    # Never a cookie: staff tools are API clients.
    "staff": [{"staffBearer": []}],
}


def _parameter(parameter: Parameter) -> Schema:
    return {
        "name": parameter.name,
        "in": parameter.where,
        "required": parameter.required or parameter.where == "path",
        "schema": parameter.schema,
        "description": parameter.description,
    }


def _response(answer: Answer, schemas: dict[str, Schema]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": answer.description}
    if isinstance(answer.schema, str):
        if answer.schema not in schemas:
            raise LookupError(f"answer {answer.status} names no schema of the document: {answer.schema}")
        response["content"] = {answer.content_type: {"schema": _ref(answer.schema)}}
    elif answer.schema is not None:
        response["content"] = {answer.content_type: {"schema": answer.schema}}
    if answer.cached:
        response["headers"] = CACHE_HEADERS
    return response


def _request_body(body: Body | MessageBody, components: Components) -> dict[str, Any]:
    if isinstance(body, MessageBody):
        descriptor = cast(Descriptor, body.message.DESCRIPTOR)
        return {
            "required": False,
            "description": (
                f"The proto3 JSON of {descriptor.name}"
                + (f" without {', '.join(sorted(body.omit))} (the path and the credential say it)" if body.omit else "")
                + "; an empty body is every field at its default."
            ),
            "content": _json(components.message(descriptor, body.omit, as_input=True)),
        }
    return {"required": body.body_required, "content": _json(_body(dict(body.properties), list(body.required)))}


def _operation(operation: Operation, schemas: dict[str, Schema], components: Components) -> dict[str, Any]:
    described: dict[str, Any] = {"operationId": operation.operation_id, "summary": operation.summary}
    if operation.description is not None:
        described["description"] = operation.description
    if operation.sign_in is not None:
        described["security"] = SECURITY[operation.sign_in]
    if operation.parameters:
        described["parameters"] = [_parameter(parameter) for parameter in operation.parameters]
    if operation.body is not None:
        described["requestBody"] = _request_body(operation.body, components)
    responses = {str(answer.status): _response(answer, schemas) for answer in operation.answers}
    if operation.revalidated:
        responses |= _not_modified()
    if operation.errors is not None:
        responses |= _errors(*operation.errors)
    described["responses"] = responses
    return described


def _paths(schemas: dict[str, Schema], components: Components) -> dict[str, Any]:
    """The paths of every documented route of the table the router is built from."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if route.operation is not None:
            paths.setdefault(route.documented_path, {})[route.method.lower()] = _operation(
                route.operation, schemas, components
            )
    return paths


def document() -> dict[str, Any]:
    components = Components()
    # In this order, the order of components.schemas in the document; the
    # route table's answers name them.
    components.message(petition_pb2.Petition.DESCRIPTOR)
    components.message(petitions_pb2.ListPetitionsResponse.DESCRIPTOR)
    components.message(signing_pb2.SignResponse.DESCRIPTOR, omit=frozenset({"position"}))
    components.message(tally_pb2.PetitionTally.DESCRIPTOR)
    components.message(identity_pb2.BeginEmailVerificationResponse.DESCRIPTOR)
    for answered in (
        petitions_pb2.ListPetitionTypesResponse,
        petitions_pb2.ListCommitteesResponse,
        petitions_pb2.SponsorPetitionResponse,
        petitions_pb2.SuggestCommitteeResponse,
        petitions_pb2.GetAuditTrailResponse,
        petitions_pb2.CloseLegislatureResponse,
    ):
        components.message(answered.DESCRIPTOR)
    # The request bodies' schemas join components.schemas as the paths are
    # written; the answers name only those above.
    schemas = {
        **components.schemas,
        "Error": _error_schema(),
        "Session": _session_schema(),
        "OpenData": _open_data_schema(),
    }
    paths = _paths(schemas, components)
    schemas |= {name: schema for name, schema in components.schemas.items() if name not in schemas}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "petition-intake gateway",
            "version": "1",
            "description": (
                "HTTP/JSON over the petition services. Bodies follow the proto3 JSON mapping of "
                "proto/petitions/v1 with the .proto field names: 64-bit integers are strings, enums "
                "their names, timestamps RFC 3339. Every error has the Error body, even for a request "
                "the HTTP parser cannot read (400 MALFORMED_REQUEST, or LINE_TOO_LONG past 8190 bytes). "
                "A POST, PATCH or DELETE signed in by a cookie (the signer's or the author's) must come "
                "from the gateway's own page: its Origin one of the gateway's origins, or without Origin "
                "Sec-Fetch-Site: same-origin; otherwise 403 CROSS_ORIGIN_REQUEST (Bearer clients are not "
                "asked). Staff operations take a Bearer staff credential only, never a cookie. A "
                "Content-Type other than JSON is 415 UNSUPPORTED_MEDIA_TYPE even over an empty body "
                "(except application/octet-stream over an empty body)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": _answer("An error, with its reason and details.", _ref("Error"))},
            "securitySchemes": {
                "credentialCookie": {"type": "apiKey", "in": "cookie", "name": CREDENTIAL_COOKIE},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "signer credential (compact JWS)"},
                "authorCookie": {"type": "apiKey", "in": "cookie", "name": AUTHOR_COOKIE},
                "authorBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "author credential (compact JWS)"},
                "staffBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "staff credential (compact JWS)"},
            },
        },
    }


def rendered() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if openapi.json is out of date")
    options = parser.parse_args()
    text = rendered()
    if options.check:
        if OPENAPI_FILE.read_text(encoding="utf-8") != text:
            print(f"{OPENAPI_FILE} is out of date: run python -m services.gateway.openapi", file=sys.stderr)
            return 1
        return 0
    OPENAPI_FILE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
