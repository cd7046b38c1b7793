"""The gateway's OpenAPI document, kept in the repo as openapi.json.

Message shapes are derived from the protobuf descriptors, following the
proto3 JSON mapping exactly as the gateway prints it (.proto field names,
every field without presence always printed, int64 as strings, enums by
name, timestamps in RFC 3339), so proto/ stays the one definition. Paths,
parameters and the error body are written here.

    python -m services.gateway.openapi           rewrite openapi.json
    python -m services.gateway.openapi --check   fail if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from petitions.v1 import identity_pb2, petition_pb2, signing_pb2, tally_pb2
from servicekit import territories
from services.catalogue.model import PETITION_ID
from services.gateway.auth import CREDENTIAL_COOKIE
from services.gateway.inputs import MAX_CLIENT_TIMEOUT_MS, MIN_CLIENT_TIMEOUT_MS, TIMEOUT_HEADER
from services.gateway.pages import OPENAPI_FILE

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
    """Collects one schema per protobuf message used by the API."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def message(self, descriptor: Descriptor, omit: frozenset[str] = frozenset()) -> Schema:
        if descriptor.name not in self.schemas:
            self.schemas[descriptor.name] = {}
            properties: dict[str, Schema] = {}
            required: list[str] = []
            for field in descriptor.fields:
                if field.name in omit:
                    continue
                properties[field.name] = self._field(field)
                # Fields without presence are always printed; messages only when set.
                if not field.has_presence:
                    required.append(field.name)
            self.schemas[descriptor.name] = {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        return _ref(descriptor.name)

    def _field(self, field: FieldDescriptor) -> Schema:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field)}
        return self._single(field)

    def _single(self, field: FieldDescriptor) -> Schema:
        if field.message_type is not None:
            if field.message_type.full_name == TIMESTAMP:
                return {"type": "string", "format": "date-time"}
            return self.message(field.message_type)
        if field.enum_type is not None:
            return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
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
        "description": "The browser's sign-in, without the pseudonym or the credential itself.",
        "required": ["signed_in"],
        "additionalProperties": False,
        "properties": {
            "signed_in": {"type": "boolean"},
            "expires_at": {"type": "string", "format": "date-time"},
            "method": {"type": "string", "enum": list(identity_pb2.VerificationMethod.keys())},
            "country": {"type": "string"},
            "territory": {"type": "string"},
            "adult": {"type": "boolean"},
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


def _parameter(name: str, where: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


PETITION = _parameter(
    "petition_id", "path", {"type": "string", "pattern": PETITION_ID.pattern}, "The petition's id, e.g. demo."
)
IF_NONE_MATCH = _parameter("If-None-Match", "header", {"type": "string"}, "An ETag from an earlier answer.")
TIMEOUT = _parameter(
    TIMEOUT_HEADER,
    "header",
    {"type": "integer", "minimum": MIN_CLIENT_TIMEOUT_MS, "maximum": MAX_CLIENT_TIMEOUT_MS},
    "Answer within this many milliseconds (shortens the gateway's own budget; passed on to gRPC as the deadline).",
)
SIGNED_IN: list[dict[str, list[str]]] = [{"credentialCookie": []}, {"bearer": []}]


def document() -> dict[str, Any]:
    components = Components()
    petition = components.message(petition_pb2.Petition.DESCRIPTOR)
    listing = components.message(signing_pb2.ListPetitionsResponse.DESCRIPTOR)
    receipt = components.message(signing_pb2.SignResponse.DESCRIPTOR, omit=frozenset({"position"}))
    tally = components.message(tally_pb2.PetitionTally.DESCRIPTOR)
    started = components.message(identity_pb2.BeginEmailVerificationResponse.DESCRIPTOR)
    schemas = {
        **components.schemas,
        "Error": _error_schema(),
        "Session": _session_schema(),
        "OpenData": _open_data_schema(),
    }
    session = _ref("Session")
    paths: dict[str, Any] = {
        "/api/v1/petitions": {
            "get": {
                "operationId": "listPetitions",
                "summary": "Petitions in the catalogue, optionally only those in one state.",
                "parameters": [
                    _parameter(
                        "state",
                        "query",
                        {
                            "type": "string",
                            "enum": [name for name, value in petition_pb2.PetitionState.items() if value],
                        },
                        "Only petitions in this state.",
                    ),
                    _parameter(
                        "page_size", "query", {"type": "integer", "minimum": 0, "maximum": 500}, "0: the default."
                    ),
                    _parameter(
                        "page_token", "query", {"type": "string", "maxLength": 512}, "next_page_token of a page."
                    ),
                    IF_NONE_MATCH,
                    TIMEOUT,
                ],
                "responses": {"200": _answer("A page of petitions.", listing, CACHE_HEADERS)}
                | _not_modified()
                | _errors(),
            }
        },
        "/api/v1/petitions/{petition_id}": {
            "get": {
                "operationId": "getPetition",
                "summary": "One petition: text, state, thresholds, eligibility.",
                "parameters": [PETITION, IF_NONE_MATCH, TIMEOUT],
                "responses": {"200": _answer("The petition.", petition, CACHE_HEADERS)}
                | _not_modified()
                | _errors(404),
            }
        },
        "/api/v1/petitions/{petition_id}/signatures": {
            "post": {
                "operationId": "signPetition",
                "summary": "Signs the petition as the holder of the signer credential.",
                "description": (
                    "A person who already signed gets outcome OUTCOME_ALREADY_SIGNED (not an error). A retry "
                    "with the same idempotency key gets the first answer and records nothing new."
                ),
                "security": SIGNED_IN,
                "parameters": [
                    PETITION,
                    _parameter(
                        "Idempotency-Key",
                        "header",
                        {"type": "string", "minLength": 8, "maxLength": 128, "pattern": "^[!-~]+$"},
                        "Chosen by the client; generated when absent.",
                    ),
                    TIMEOUT,
                ],
                "requestBody": {
                    "required": False,
                    "content": _json(
                        _body(
                            {
                                "idempotency_key": {
                                    "type": "string",
                                    "minLength": 8,
                                    "maxLength": 128,
                                    "pattern": "^[!-~]+$",
                                }
                            },
                            [],
                        )
                    ),
                },
                "responses": {"200": _answer("Signed, or had already signed.", receipt)}
                | _errors(401, 403, 404, 413, 415),
            }
        },
        "/api/v1/petitions/{petition_id}/tally": {
            "get": {
                "operationId": "getTally",
                "summary": "The petition's counts: total, by territory, by country, thresholds reached.",
                "description": "Cacheable for a short time by browsers and CDNs; served from a coalescing cache.",
                "parameters": [PETITION, IF_NONE_MATCH, TIMEOUT],
                "responses": {"200": _answer("The tally.", tally, CACHE_HEADERS)} | _not_modified() | _errors(404),
            }
        },
        "/api/v1/petitions/{petition_id}/tally/live": {
            "get": {
                "operationId": "watchTally",
                "summary": "Server-Sent Events: event `tally` (a PetitionTally) now and at each change.",
                "description": (
                    "Event `paused` (an Error): tally cannot be reached, updates resume by themselves; when the "
                    "stream then ends, the browser reconnects. Event `ended` (an Error): the stream is over for good."
                ),
                "parameters": [PETITION, TIMEOUT],
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                }
                | _errors(404),
            }
        },
        "/api/v1/petitions/{petition_id}/open-data.json": {
            "get": {
                "operationId": "getOpenDataJson",
                "summary": "Open data: the counts by territory and by country, as JSON.",
                "parameters": [PETITION, IF_NONE_MATCH, TIMEOUT],
                "responses": {"200": _answer("The counts.", _ref("OpenData"), CACHE_HEADERS)}
                | _not_modified()
                | _errors(404),
            }
        },
        "/api/v1/petitions/{petition_id}/open-data.csv": {
            "get": {
                "operationId": "getOpenDataCsv",
                "summary": (
                    "Open data as CSV: petition_id, as_of, scope (total, territory, country), code, name (a"
                    " territory's), signatures."
                ),
                "parameters": [PETITION, IF_NONE_MATCH, TIMEOUT],
                "responses": {
                    "200": {
                        "description": "The counts.",
                        "headers": CACHE_HEADERS,
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    }
                }
                | _not_modified()
                | _errors(404),
            }
        },
        "/api/v1/auth/email/start": {
            "post": {
                "operationId": "startEmailVerification",
                "summary": "Sends a one-time code to an email address.",
                "parameters": [TIMEOUT],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        _body(
                            {
                                "email": {"type": "string", "format": "email", "maxLength": 320},
                                # Each may be empty (not declared); a territory is a code of
                                # the reference list, exactly (servicekit.territories).
                                "country": {"type": "string", "pattern": "^(?:[A-Z]{2})?$"},
                                "territory": {"type": "string", "enum": ["", *territories.codes()]},
                            },
                            ["email"],
                        )
                    ),
                },
                "responses": {"200": _answer("Code sent; pass verification_id to complete.", started)}
                | _errors(403, 413, 415),
            }
        },
        "/api/v1/auth/email/complete": {
            "post": {
                "operationId": "completeEmailVerification",
                "summary": "Checks the code; the signer credential is set as an HttpOnly cookie.",
                "parameters": [TIMEOUT],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        _body(
                            {
                                "verification_id": {"type": "string", "maxLength": 64},
                                "code": {"type": "string", "pattern": "^[0-9]{6}$"},
                            },
                            ["verification_id", "code"],
                        )
                    ),
                },
                "responses": {"200": _answer("Signed in.", session)} | _errors(401, 403, 404, 413, 415),
            }
        },
        "/api/v1/session": {
            "get": {
                "operationId": "getSession",
                "summary": "Whether this browser is signed in, how, and until when.",
                "description": (
                    "The credential cookie is checked against identity's keys first: one identity did not "
                    "sign (or expired) is signed_in false, and the cookie is cleared."
                ),
                "responses": {"200": _answer("The sign-in.", session)} | _errors(),
            },
            "delete": {
                "operationId": "signOut",
                "summary": "Forgets this browser's signer credential.",
                "responses": {"200": _answer("Signed out.", session)} | _errors(403, 415),
            },
        },
        "/auth/oidc/start": {
            "get": {
                "operationId": "startOidcSignIn",
                "summary": "Redirects to the identity provider (authorization code flow with PKCE).",
                "parameters": [
                    _parameter(
                        "return_to",
                        "query",
                        {"type": "string"},
                        "A path on this site to come back to; anything else (another site, over 512 characters) "
                        "comes back to /.",
                    )
                ],
                "responses": {
                    "302": {"description": "To the identity provider."},
                    "303": {"description": "Back to the page with ?signin_error=REASON (provider unreachable)."},
                }
                | _errors(),
            }
        },
        "/auth/oidc/callback": {
            "get": {
                "operationId": "finishOidcSignIn",
                "summary": "Where the identity provider sends the browser back.",
                "parameters": [
                    _parameter("code", "query", {"type": "string"}, "The one-time code."),
                    _parameter("state", "query", {"type": "string"}, "The state sent at the start."),
                    _parameter("error", "query", {"type": "string"}, "The provider's refusal, if any."),
                ],
                "responses": {
                    "303": {
                        "description": (
                            "Back to the page: signed in (the credential is an HttpOnly cookie), "
                            "or with ?signin_error=REASON."
                        )
                    }
                }
                | _errors(),
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is alive.",
                "responses": {"200": _answer("Alive.", _body({"status": {"type": "string"}}, ["status"]))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Every backend is reachable and the gateway is not stopping.",
                "responses": {
                    status: _answer(
                        description,
                        _body(
                            {
                                "status": {"type": "string", "enum": ["ready", "not_ready"]},
                                "backends": {"type": "object", "additionalProperties": {"type": "boolean"}},
                            },
                            ["status", "backends"],
                        ),
                    )
                    for status, description in (("200", "Ready."), ("503", "Not ready."))
                },
            }
        },
    }
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
                "A POST or DELETE signed in by the credential cookie must come from the gateway's own "
                "page: its Origin one of the gateway's origins, or without Origin Sec-Fetch-Site: "
                "same-origin; otherwise 403 CROSS_ORIGIN_REQUEST (Bearer clients are not asked). A "
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
