"""The OpenID Connect authorization code flow, on the relying party's side.

start: a random state (against forged callbacks), nonce (binds the ID token
to this sign-in) and PKCE verifier (a stolen code is useless without it) go
into a short-lived cookie that the gateway signs, so it keeps no server-side
session; the browser is sent to the provider's authorization endpoint.

callback: the state must match the cookie's; the code is exchanged at the
provider's token endpoint for an ID token, which goes to identity together
with the nonce (always: identity then accepts only a token bound to it, and
spends each ID token once). The gateway does not read the ID token:
identity verifies it, and only identity ever sees who the person is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

MAX_PARAMETER_LENGTH = 4096
MAX_RETURN_PATH_LENGTH = 512
METADATA_CACHE_SECONDS = 3600.0


class SignInFailed(Exception):
    """A sign-in that cannot go on; reason is stable, for the page to explain."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SealedCookie:
    """JSON values signed with HMAC-SHA256, with an expiry inside.

    Signed, not encrypted: the one browser that holds the cookie may read
    its own state, nonce and verifier; it must not be able to change them."""

    def __init__(self, key: bytes, purpose: str):
        # One key, several cookies: each purpose signs with its own derived key.
        self._key = hmac.new(key, purpose.encode(), hashlib.sha256).digest()

    def seal(self, payload: Mapping[str, Any], expires_at: float) -> str:
        body = _b64(json.dumps({**payload, "exp": int(expires_at)}, separators=(",", ":")).encode())
        return f"{body}.{_b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())}"

    def open(self, value: str, now: float) -> dict[str, Any] | None:
        """The payload, or None if the value was altered, forged or is expired."""
        body, _, mac = value.partition(".")
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not mac or not hmac.compare_digest(mac, expected):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int) or payload["exp"] < now:
            return None
        return payload


def safe_return_path(value: str | None) -> str:
    """A path on this site to come back to after signing in; anything else
    (another site, "//host", a scheme) becomes "/": no open redirect."""
    if (
        not value
        or len(value) > MAX_RETURN_PATH_LENGTH
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)
    ):
        return "/"
    return value


@dataclass(frozen=True)
class SignInStart:
    authorization_url: str
    cookie: str


@dataclass(frozen=True)
class CompletedSignIn:
    id_token: str
    nonce: str
    return_to: str
    # What the sign-in's start chose (the author's display name form),
    # carried in the sealed cookie so the browser cannot change it on the way.
    choices: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Metadata:
    authorization_endpoint: str
    token_endpoint: str
    fetched_at: float


class OidcCodeFlow:
    """The code flow against one provider, for one client registration."""

    def __init__(
        self,
        *,
        provider_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        scopes: str,
        state_seconds: int,
        cookie: SealedCookie,
        http: aiohttp.ClientSession,
        timeout_seconds: float,
    ):
        self._issuer = provider_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._scopes = scopes
        self._state_seconds = state_seconds
        self._cookie = cookie
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._metadata: _Metadata | None = None

    async def begin(self, return_to: str | None, choices: Mapping[str, str] | None = None) -> SignInStart:
        metadata = await self._provider()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": self._redirect_uri,
                "scope": self._scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        cookie = self._cookie.seal(
            {
                "state": state,
                "nonce": nonce,
                "verifier": verifier,
                "return_to": safe_return_path(return_to),
                "choices": dict(choices or {}),
            },
            time.time() + self._state_seconds,
        )
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return SignInStart(f"{metadata.authorization_endpoint}{separator}{query}", cookie)

    def return_path(self, cookie: str | None) -> str:
        """Where a sign-in should come back to, even when it failed."""
        pending = self._cookie.open(cookie, time.time()) if cookie else None
        return safe_return_path(str(pending.get("return_to", "/"))) if pending else "/"

    async def complete(self, parameters: Mapping[str, str], cookie: str | None) -> CompletedSignIn:
        pending = self._cookie.open(cookie, time.time()) if cookie else None
        if pending is None:
            raise SignInFailed("SIGN_IN_EXPIRED", "this sign-in has expired or was started elsewhere; start again")
        if "error" in parameters:
            raise SignInFailed("PROVIDER_REFUSED", "the identity provider did not sign you in")
        state = parameters.get("state", "")
        code = parameters.get("code", "")
        if not code or len(code) > MAX_PARAMETER_LENGTH:
            raise SignInFailed("CODE_MISSING", "the identity provider sent no usable code")
        if not hmac.compare_digest(state.encode(), str(pending.get("state", "")).encode()):
            raise SignInFailed("STATE_MISMATCH", "this answer does not belong to the sign-in you started")
        nonce = str(pending.get("nonce", ""))
        if not nonce:
            # begin() always seals one; identity requires it of a token bound
            # to one and refuses a token without one when it is sent, so the
            # code flow never exchanges an ID token without its nonce.
            raise SignInFailed("SIGN_IN_EXPIRED", "this sign-in has expired or was started elsewhere; start again")
        id_token = await self._redeem(code, str(pending.get("verifier", "")))
        choices = pending.get("choices")
        return CompletedSignIn(
            id_token,
            nonce,
            safe_return_path(pending.get("return_to")),
            {str(k): str(v) for k, v in choices.items()} if isinstance(choices, dict) else {},
        )

    async def _redeem(self, code: str, verifier: str) -> str:
        metadata = await self._provider()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri,
            "client_id": self._client_id,
            "code_verifier": verifier,
        }
        # client_secret_basic: RFC 6749 (2.3.1) form-encodes both before Basic.
        auth = (
            aiohttp.BasicAuth(quote(self._client_id, safe=""), quote(self._client_secret, safe=""))
            if self._client_secret
            else None
        )
        try:
            async with self._http.post(
                metadata.token_endpoint, data=form, auth=auth, timeout=self._timeout
            ) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise SignInFailed("PROVIDER_UNAVAILABLE", f"the identity provider cannot be reached: {error!r}") from None
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str):
            raise SignInFailed("CODE_REJECTED", "the identity provider did not accept the sign-in code")
        return str(answer["id_token"])

    async def _provider(self) -> _Metadata:
        """The provider's endpoints, from its discovery document (cached)."""
        now = time.monotonic()
        if self._metadata is not None and now - self._metadata.fetched_at < METADATA_CACHE_SECONDS:
            return self._metadata
        url = f"{self._issuer}/.well-known/openid-configuration"
        try:
            async with self._http.get(url, timeout=self._timeout) as response:
                response.raise_for_status()
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise SignInFailed("PROVIDER_UNAVAILABLE", f"the identity provider cannot be reached: {error!r}") from None
        # OpenID Connect Discovery: the document must name the issuer we asked.
        if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != self._issuer:
            raise SignInFailed("PROVIDER_MISCONFIGURED", "the identity provider's discovery document is not ours")
        try:
            self._metadata = _Metadata(str(document["authorization_endpoint"]), str(document["token_endpoint"]), now)
        except KeyError as missing:
            raise SignInFailed("PROVIDER_MISCONFIGURED", f"the provider does not publish {missing}") from None
        return self._metadata
