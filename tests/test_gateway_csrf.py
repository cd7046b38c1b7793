"""Another page of the same site (here another port of 127.0.0.1; in
production a sibling subdomain) gets the visitor's SameSite cookie sent
along with its forms and fetches. A request signed in by that cookie that
changes something must therefore show it comes from the gateway's own page
(Origin, or Sec-Fetch-Site: same-origin), and no form content type is read
as JSON, even over an empty body. Bearer clients are not asked for an
origin. Each refusal has the documented body and signs nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.gateway_http import assert_error, client_ip
from tests.system import SystemClient

pytestmark = pytest.mark.stack

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Visitor:
    """A signed-in visitor of a fresh petition: the cookie a browser holds."""

    system: SystemClient
    petition: str
    credential: str

    @property
    def gateway(self) -> str:
        return self.system.namespace.gateway_url

    @property
    def same_site_origin(self) -> str:
        # Same host, another port: same site for SameSite, another origin.
        return f"http://127.0.0.1:{self.system.namespace.ports['devidp']}"

    async def post(
        self, path: str, headers: Mapping[str, str], data: bytes = b"", cookie: bool = True
    ) -> tuple[int, Any]:
        sent = {"X-Forwarded-For": client_ip(), **headers}
        if cookie:
            sent["Cookie"] = f"pi_credential={self.credential}"
        async with aiohttp.ClientSession() as http, http.post(self.gateway + path, headers=sent, data=data) as answer:
            return answer.status, await answer.json()

    async def sign(self, headers: Mapping[str, str], data: bytes = b"", cookie: bool = True) -> tuple[int, Any]:
        return await self.post(f"/api/v1/petitions/{self.petition}/signatures", headers, data, cookie)


@pytest.fixture
async def visitor(system: SystemClient) -> Visitor:
    petition = await asyncio.to_thread(system.create_petition, "Same origin only")
    credential = await asyncio.to_thread(system.credential, f"csrf-{uuid.uuid4().hex[:8]}")
    return Visitor(system, petition.id, credential.token)


async def _signs_for_the_first_time(visitor: Visitor) -> None:
    """The visitor's own page signs now, and it is the first signature: no
    refused request before it signed anything."""
    status, receipt = await visitor.sign({"Origin": visitor.gateway})
    assert status == 200, receipt
    assert receipt["outcome"] == "OUTCOME_ACCEPTED", receipt


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": "SAME_SITE", "Content-Type": FORM}, id="empty-form-from-another-port"),
        pytest.param({"Origin": "SAME_SITE", "Content-Type": "text/plain"}, id="empty-text-from-another-port"),
        pytest.param({"Origin": "SAME_SITE"}, id="fetch-without-body-from-another-port"),
        pytest.param({"Origin": "null"}, id="opaque-origin"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="no-origin-same-site-fetch"),
        pytest.param({}, id="no-origin-at-all"),
    ],
)
async def test_a_cookie_signature_from_another_origin_is_refused(visitor: Visitor, headers: dict[str, str]) -> None:
    sent = {name: visitor.same_site_origin if value == "SAME_SITE" else value for name, value in headers.items()}
    status, body = await visitor.sign(sent)
    assert_error(status, body, 403, "CROSS_ORIGIN_REQUEST")
    await _signs_for_the_first_time(visitor)


async def test_a_form_content_type_is_refused_even_from_the_page_and_empty(visitor: Visitor) -> None:
    for content_type in (FORM, "text/plain", "multipart/form-data; boundary=x"):
        status, body = await visitor.sign({"Origin": visitor.gateway, "Content-Type": content_type})
        assert_error(status, body, 415, "UNSUPPORTED_MEDIA_TYPE")
    # JSON is fine, and Sec-Fetch-Site stands for an Origin a privacy proxy
    # removed; this is the first signature: none of the above signed.
    status, receipt = await visitor.sign({"Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"})
    assert status == 200, receipt
    assert receipt["outcome"] == "OUTCOME_ACCEPTED", receipt


async def test_a_bearer_client_is_not_asked_for_an_origin(visitor: Visitor) -> None:
    cookie_status, cookie_body = await visitor.sign({"Origin": visitor.same_site_origin})
    assert_error(cookie_status, cookie_body, 403, "CROSS_ORIGIN_REQUEST")
    status, receipt = await visitor.sign(
        {"Origin": visitor.same_site_origin, "Authorization": f"Bearer {visitor.credential}"}, cookie=False
    )
    assert status == 200, receipt
    assert receipt["outcome"] == "OUTCOME_ACCEPTED"


async def test_sign_out_and_sign_in_from_another_origin_are_refused(system: SystemClient, visitor: Visitor) -> None:
    foreign = {"Origin": visitor.same_site_origin, "X-Forwarded-For": client_ip()}
    cookie = {"Cookie": f"pi_credential={visitor.credential}"}
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{visitor.gateway}/api/v1/session", headers={**foreign, **cookie}) as answer:
            assert_error(answer.status, await answer.json(), 403, "CROSS_ORIGIN_REQUEST")
            assert "Set-Cookie" not in answer.headers
        # A foreign page signing the visitor in as someone else.
        address = f"csrf-{uuid.uuid4().hex[:8]}@example.org"
        system.raw_identities.add(address)
        async with http.post(
            f"{visitor.gateway}/api/v1/auth/email/start", headers=foreign, json={"email": address}
        ) as answer:
            assert_error(answer.status, await answer.json(), 403, "CROSS_ORIGIN_REQUEST")
    await _signs_for_the_first_time(visitor)
