"""Requests the gateway must refuse: malformed JSON, wrong types, huge
bodies, unknown petitions, missing or bad credentials. Each gets a 4xx with
the documented error body naming what was wrong, and none of them puts
anything on the signatures log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.gateway_http import assert_error, client_ip
from tests.system import SystemClient

pytestmark = pytest.mark.stack

MEGABYTE = 1024 * 1024


async def _chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    """A body sent without Content-Length (chunked), so only reading it can
    tell how big it is."""
    sent = 0
    while sent < total:
        yield b" " * size
        sent += size


def _case(
    name: str,
    method: str,
    path: str,
    status: int,
    reason: str,
    *,
    headers: dict[str, str] | None = None,
    data: Any = None,
    fields: tuple[str, ...] = (),
    signed_in: bool = True,
) -> Any:
    return pytest.param(method, path, status, reason, headers or {}, data, fields, signed_in, id=name)


JSON = {"Content-Type": "application/json"}
SIGN = "/api/v1/petitions/{petition}/signatures"
EMAIL_START = "/api/v1/auth/email/start"
EMAIL_COMPLETE = "/api/v1/auth/email/complete"

CASES = [
    _case("malformed-json", "POST", SIGN, 400, "MALFORMED_JSON", headers=JSON, data=b'{"idempotency_key": '),
    _case("json-not-an-object", "POST", SIGN, 400, "MALFORMED_JSON", headers=JSON, data=b"[1, 2]"),
    _case("deeply-nested-json", "POST", SIGN, 400, "MALFORMED_JSON", headers=JSON, data=b"[" * 5000 + b"]" * 5000),
    _case("invalid-utf8", "POST", SIGN, 400, "MALFORMED_JSON", headers=JSON, data=b'{"idempotency_key": "\xff\xfe"}'),
    _case(
        "lone-surrogate",
        "POST",
        SIGN,
        400,
        "INVALID_FIELD",
        headers=JSON,
        data=b'{"idempotency_key": "abcdefgh\\ud800"}',
        fields=("idempotency_key",),
    ),
    _case(
        "wrong-type",
        "POST",
        SIGN,
        400,
        "INVALID_FIELD",
        headers=JSON,
        data=b'{"idempotency_key": 1234567890}',
        fields=("idempotency_key",),
    ),
    _case(
        "unknown-field",
        "POST",
        SIGN,
        400,
        "INVALID_FIELD",
        headers=JSON,
        data=b'{"client_ip": "1.2.3.4"}',
        fields=("client_ip",),
    ),
    _case("not-json", "POST", SIGN, 415, "UNSUPPORTED_MEDIA_TYPE", headers={"Content-Type": "text/plain"}, data=b"hi"),
    _case("huge-body", "POST", SIGN, 413, "BODY_TOO_LARGE", headers=JSON, data=b" " * MEGABYTE),
    _case("huge-chunked-body", "POST", SIGN, 413, "BODY_TOO_LARGE", headers=JSON, data="chunked"),
    _case("unknown-petition", "POST", "/api/v1/petitions/never-created-x/signatures", 404, "PETITION_NOT_FOUND"),
    _case(
        "malformed-petition-id",
        "POST",
        "/api/v1/petitions/Not_An_Id/signatures",
        400,
        "INVALID_FIELD",
        fields=("petition_id",),
    ),
    _case("missing-credential", "POST", SIGN, 401, "CREDENTIAL_MISSING", signed_in=False),
    _case(
        "not-a-bearer",
        "POST",
        SIGN,
        401,
        "CREDENTIAL_MALFORMED",
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
        signed_in=False,
    ),
    _case(
        "forged-credential",
        "POST",
        SIGN,
        401,
        "CREDENTIAL_REJECTED",
        headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
        signed_in=False,
    ),
    _case(
        "short-idempotency-key",
        "POST",
        SIGN,
        400,
        "INVALID_FIELD",
        headers={"Idempotency-Key": "abc"},
        fields=("idempotency_key",),
    ),
    _case(
        "keys-that-differ",
        "POST",
        SIGN,
        400,
        "INVALID_FIELD",
        headers={"Idempotency-Key": "abcdefgh-1", **JSON},
        data=b'{"idempotency_key": "abcdefgh-2"}',
        fields=("idempotency_key",),
    ),
    _case(
        "bad-timeout-header",
        "POST",
        SIGN,
        400,
        "INVALID_FIELD",
        headers={"X-Request-Timeout-Ms": "soon"},
        fields=("X-Request-Timeout-Ms",),
    ),
    _case(
        "email-wrong-types",
        "POST",
        EMAIL_START,
        400,
        "INVALID_FIELD",
        headers=JSON,
        data=b'{"email": 5, "country": ["FR"]}',
        fields=("email", "country"),
    ),
    _case("email-missing", "POST", EMAIL_START, 400, "INVALID_FIELD", headers=JSON, data=b"{}", fields=("email",)),
    _case(
        "email-not-an-address",
        "POST",
        EMAIL_START,
        400,
        "INVALID_FIELD",
        headers=JSON,
        data=b'{"email": "nobody"}',
        fields=("email",),
    ),
    _case(
        "code-wrong-type",
        "POST",
        EMAIL_COMPLETE,
        400,
        "INVALID_FIELD",
        headers=JSON,
        data=b'{"verification_id": "x", "code": 123456}',
        fields=("code",),
    ),
    _case("unknown-route", "GET", "/api/v1/nothing-here", 404, "ROUTE_NOT_FOUND"),
    _case("wrong-method", "PUT", "/api/v1/petitions/{petition}", 405, "METHOD_NOT_ALLOWED"),
    _case("unknown-petition-tally", "GET", "/api/v1/petitions/never-created-x/tally", 404, "PETITION_NOT_FOUND"),
    _case("unknown-petition", "GET", "/api/v1/petitions/never-created-x", 404, "PETITION_NOT_FOUND"),
]


async def _send(
    system: SystemClient,
    refusals: Refusals,
    method: str,
    path: str,
    headers: dict[str, str],
    data: Any,
    signed_in: bool,
) -> tuple[int, Any, str | None]:
    """Sends one case; its status, JSON answer and Allow header."""
    sent = {"X-Forwarded-For": client_ip(), **headers}
    if signed_in and "Authorization" not in sent:
        sent["Authorization"] = f"Bearer {refusals.credential}"
    body = _chunks(MEGABYTE) if data == "chunked" else data
    url = system.namespace.gateway_url + path.format(petition=refusals.petition)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=sent, data=body) as response,
    ):
        return response.status, await response.json(), response.headers.get("Allow")


@pytest.mark.parametrize(("method", "path", "status", "reason", "headers", "data", "fields", "signed_in"), CASES)
async def test_a_bad_request_gets_a_4xx_naming_what_is_wrong(
    system: SystemClient,
    refusals: Refusals,
    method: str,
    path: str,
    status: int,
    reason: str,
    headers: dict[str, str],
    data: Any,
    fields: tuple[str, ...],
    signed_in: bool,
) -> None:
    answered, answer, allow = await _send(system, refusals, method, path, headers, data, signed_in)
    error = assert_error(answered, answer, status, reason)
    if status == 405:
        assert allow == "GET,HEAD"
    assert {v["field"] for v in error["field_violations"]} >= set(fields)


class Refusals:
    """What the cases share: a real petition and a valid credential."""

    def __init__(self, petition: str, credential: str):
        self.petition = petition
        self.credential = credential


@pytest.fixture(scope="module")
def refusals(system: SystemClient) -> Refusals:
    petition = system.create_petition("Refusals")
    credential = system.credential(f"refused-{uuid.uuid4().hex[:8]}")
    return Refusals(petition.id, credential.token)


async def test_no_refused_request_published_anything(system: SystemClient, refusals: Refusals) -> None:
    # Sends every case itself, so it means the same alone under -k, first,
    # or after the cases above.
    ends_before = await asyncio.to_thread(system.end_offsets)
    for case in CASES:
        method, path, status, _reason, headers, data, _fields, signed_in = case.values
        answered, _answer, _allow = await _send(system, refusals, method, path, headers, data, signed_in)
        assert answered == status, f"{case.id}: {answered}"
    assert await asyncio.to_thread(system.end_offsets) == ends_before
