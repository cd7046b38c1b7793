"""GET /api/v1/session tells the page it is signed in only for a credential
identity really issued: checked against identity's public keys, like
signing checks it. A forged cookie (alg "none", or signed by a key identity
never had, or expired) shows signed out and is cleared."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from servicekit import signer_credential
from servicekit.signer_credential import SignerClaims
from tests.gateway_http import client_ip
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    """A credential with alg "none": claims anyone can write."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}."


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": signer_credential.ISSUER,
        "aud": signer_credential.AUDIENCE,
        "sub": uuid.uuid4().hex,
        "mth": "oidc",
        "acr": "eidas1",
        "cty": "XX",
        "ter": "99",
        "adl": True,
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
    }
    return claims | overrides


def _signed_by_a_stranger() -> str:
    """A well-formed EdDSA credential from a key identity does not have."""
    token, _ = signer_credential.issue(
        ed25519.Ed25519PrivateKey.generate(),
        SignerClaims(uuid.uuid4().hex, "oidc", "eidas1", "XX", "99", adult=True),
        ttl_seconds=3600,
    )
    return token


async def _session(system: SystemClient, credential: str) -> tuple[dict[str, Any], aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{system.namespace.gateway_url}/api/v1/session",
            headers={"Cookie": f"pi_credential={credential}", "X-Forwarded-For": client_ip()},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json(), response


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda: _unsigned(_claims()), id="alg-none"),
        pytest.param(_signed_by_a_stranger, id="unknown-key"),
        pytest.param(lambda: "not.a.credential", id="garbage"),
    ],
)
async def test_a_forged_credential_shows_signed_out_and_is_cleared(system: SystemClient, forge: Any) -> None:
    view, response = await _session(system, forge())
    assert view == {"signed_in": False, "author": {"signed_in": False}}
    cleared = response.cookies["pi_credential"]
    assert cleared.value == ""
    assert cleared["path"] == "/api/"
    assert cleared["max-age"] == "0"


async def test_an_issued_credential_shows_what_identity_vouched_for(system: SystemClient) -> None:
    credential = await asyncio.to_thread(system.credential, f"session-{uuid.uuid4().hex[:8]}", "FR", "13")
    view, response = await _session(system, credential.token)
    assert view["signed_in"] is True, view
    assert (view["method"], view["country"], view["territory"]) == ("VERIFICATION_METHOD_OIDC", "FR", "13")
    assert "pi_credential" not in response.cookies
    # The same claims with identity's signature stripped are worth nothing.
    _, payload, _ = credential.token.split(".")
    stripped = f"{_segment({'alg': 'none'})}.{payload}."
    view, _ = await _session(system, stripped)
    assert view == {"signed_in": False, "author": {"signed_in": False}}
