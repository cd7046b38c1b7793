"""Speaking to the gateway as a browser or an API client would: the error
body checked against the schema the OpenAPI document publishes, and the two
ways of signing in, done over HTTP."""

from __future__ import annotations

import html
import json
import random
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import jsonschema_rs

from services.gateway.pages import OPENAPI_FILE
from tests.system import SystemClient

_DOCUMENT = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
ERROR_SCHEMA = jsonschema_rs.validator_for(_DOCUMENT["components"]["schemas"]["Error"])


def assert_error(status: int, body: Any, expected_status: int, reason: str | None = None) -> dict[str, Any]:
    """The body is the documented Error, with this status (and reason)."""
    problems = [error.message for error in ERROR_SCHEMA.iter_errors(body)]
    assert not problems, f"not the documented error body: {problems}: {body}"
    assert status == expected_status, f"status {status}, expected {expected_status}: {body}"
    error: dict[str, Any] = body["error"]
    if reason is not None:
        assert error["reason"] == reason, body
    return error


def client_ip() -> str:
    """An address of its own for a request: the test limits per address are
    tight, and the session's gateway believes X-Forwarded-For from 127.0.0.1."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


async def _from_its_own_page(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Says, as a browser does on every request but GET and HEAD, which
    origin the request comes from: here the page of the server it goes to."""
    if request.method not in ("GET", "HEAD", "OPTIONS") and "Origin" not in request.headers:
        request.headers["Origin"] = str(request.url.origin())
    return await handler(request)


def browser(**headers: str) -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's jar refuses
    cookies of IP hosts unless told) and sends Origin like a browser."""
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers, middlewares=(_from_its_own_page,)
    )


async def email_sign_in(http: aiohttp.ClientSession, system: SystemClient, address: str, territory: str = "75") -> None:
    """The email flow over HTTP; the credential ends up in http's cookie jar."""
    base = system.namespace.gateway_url
    system.raw_identities.add(address)
    async with http.post(
        f"{base}/api/v1/auth/email/start", json={"email": address, "country": "FR", "territory": territory}
    ) as response:
        started = await response.json()
        assert response.status == 200, started
    code = system.code_sent_to(address)
    async with http.post(
        f"{base}/api/v1/auth/email/complete",
        json={"verification_id": started["verification_id"], "code": code},
    ) as response:
        session = await response.json()
        assert response.status == 200, session
        assert session["signed_in"] is True


async def oidc_sign_in(
    http: aiohttp.ClientSession,
    system: SystemClient,
    persona: str,
    *,
    territory: str = "75",
    return_to: str = "/petitions/demo",
) -> str:
    """The code flow as a browser follows it, typing the persona into the dev
    provider's form; returns where the gateway sent the browser at the end."""
    base = system.namespace.gateway_url
    system.raw_identities.update({f"dev-persona:{persona}", persona})
    async with http.get(f"{base}/auth/oidc/start", params={"return_to": return_to}, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        authorize = response.headers["Location"]
    async with http.get(authorize) as response:
        form = await response.text()
        assert response.status == 200, form
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
    fields = {name: html.unescape(value) for name, value in hidden.items()}
    fields.update(persona=persona, country="FR", territory=territory)
    target = urlsplit(authorize)
    async with http.post(
        f"{target.scheme}://{target.netloc}/authorize", data=fields, allow_redirects=False
    ) as response:
        assert response.status == 303, await response.text()
        callback = response.headers["Location"]
    async with http.get(callback, allow_redirects=False) as response:
        assert response.status == 303, await response.text()
        return response.headers["Location"]


def query_of(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))
