"""Signing in: the OIDC code flow and the email code, both ending with a
signer credential from identity that the gateway hands to the browser in an
HttpOnly, SameSite=Strict cookie (page scripts cannot read it; other sites
cannot make the browser send it). API clients may send it as a Bearer token
instead.

The gateway never keeps who someone is: the ID token and the email address
pass through to identity and are not logged; the credential only carries a
pseudonym, and it is never logged either. What the page is told of its
sign-in comes from a credential checked against identity's keys: a cookie
identity did not sign is no sign-in, and is cleared.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from petitions.v1 import identity_pb2
from servicekit.signer_credential import CredentialRejected, VerifiedCredential
from services.gateway.backends import Backend
from services.gateway.credential_keys import CredentialKeys
from services.gateway.http_errors import ApiError, unauthenticated
from services.gateway.inputs import Field, deadline, json_object, to_json
from services.gateway.oidc_flow import OidcCodeFlow, SignInFailed, safe_return_path
from services.gateway.request_context import CLIENT_IP
from services.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from petitions.v1.identity_pb2_grpc import IdentityAsyncStub

CREDENTIAL_COOKIE = "pi_credential"
SIGN_IN_COOKIE = "pi_signin"
CREDENTIAL_COOKIE_PATH = "/api/"
SIGN_IN_COOKIE_PATH = "/auth/oidc/"
MAX_CREDENTIAL_LENGTH = 4096

_METHOD_NAMES = {"oidc": "VERIFICATION_METHOD_OIDC", "email": "VERIFICATION_METHOD_EMAIL"}


def credential_of(request: web.Request) -> str:
    """The signer credential: Authorization: Bearer (API clients) or the
    cookie (the page). Missing → 401, before any backend is asked."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("CREDENTIAL_MALFORMED", "Authorization must be 'Bearer <signer credential>'")
        credential = token.strip()
    else:
        credential = request.cookies.get(CREDENTIAL_COOKIE, "")
        if not credential:
            raise unauthenticated("CREDENTIAL_MISSING", "sign in first: this request carries no signer credential")
    if len(credential) > MAX_CREDENTIAL_LENGTH or not credential.isascii() or not credential.isprintable():
        raise unauthenticated("CREDENTIAL_MALFORMED", "the signer credential is not a compact JWS")
    return credential


def signed_out() -> dict[str, Any]:
    return {"signed_in": False}


def session_view(method: str, country: str, territory: str, adult: bool, expires_at: float) -> dict[str, Any]:
    """What the page may know of its sign-in: how, the coarse attributes,
    until when. Not the pseudonym: the page has no use for it."""
    if expires_at <= time.time():
        return signed_out()
    return {
        "signed_in": True,
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)),
        "method": method,
        "country": country,
        "territory": territory,
        "adult": adult,
    }


def verified_view(verified: VerifiedCredential) -> dict[str, Any]:
    """The view of a credential checked against identity's keys."""
    claims = verified.claims
    method = _METHOD_NAMES.get(claims.method, "VERIFICATION_METHOD_UNSPECIFIED")
    return session_view(method, claims.country, claims.territory, claims.adult, verified.expires_at)


def issued_view(credential: identity_pb2.SignerCredential) -> dict[str, Any]:
    """The view of a credential identity has just issued, from the claims
    it sent along over gRPC."""
    claims = credential.claims
    return session_view(
        identity_pb2.VerificationMethod.Name(claims.method),
        claims.country,
        claims.territory,
        claims.adult,
        float(credential.expires_at.seconds),
    )


def _with_query(path: str, **parameters: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{urlencode(parameters)}"


class SignIn:
    def __init__(
        self,
        settings: GatewaySettings,
        identity: Backend[IdentityAsyncStub],
        flow: OidcCodeFlow,
        keys: CredentialKeys,
    ):
        self._settings = settings
        self._identity = identity
        self._flow = flow
        self._keys = keys

    async def oidc_start(self, request: web.Request) -> web.Response:
        """Sends the browser to the provider; a failure comes back to the
        page as ?signin_error=REASON, since a person is looking at it."""
        return_to = request.query.get("return_to")
        try:
            start = await self._flow.begin(return_to)
        except SignInFailed as failed:
            return self._back_to_page(safe_return_path(return_to), failed.reason)
        response = web.Response(status=302, headers={"Location": start.authorization_url, "Cache-Control": "no-store"})
        response.set_cookie(
            SIGN_IN_COOKIE,
            start.cookie,
            max_age=self._settings.oidc_state_seconds,
            path=SIGN_IN_COOKIE_PATH,
            httponly=True,
            secure=self._settings.cookie_secure,
            # Lax, not Strict: the callback is a navigation from the provider's site.
            samesite="Lax",
        )
        return response

    async def oidc_callback(self, request: web.Request) -> web.Response:
        cookie = request.cookies.get(SIGN_IN_COOKIE)
        try:
            completed = await self._flow.complete(request.query, cookie)
        except SignInFailed as failed:
            return self._sign_in_over(self._back_to_page(self._flow.return_path(cookie), failed.reason))
        budget = deadline(request, self._settings.request_timeout_seconds)
        exchange = identity_pb2.ExchangeIdTokenRequest(
            id_token=completed.id_token, nonce=completed.nonce, client_ip=request[CLIENT_IP]
        )

        def call(stub: IdentityAsyncStub) -> Awaitable[identity_pb2.SignerCredential]:
            return stub.ExchangeIdToken(exchange, timeout=budget.remaining())

        try:
            credential = await self._identity.call(call)
        except ApiError as error:
            return self._sign_in_over(self._back_to_page(completed.return_to, error.reason))
        response = web.Response(status=303, headers={"Location": completed.return_to, "Cache-Control": "no-store"})
        self._hand_over(response, credential)
        return self._sign_in_over(response)

    async def email_start(self, request: web.Request) -> web.Response:
        body = await json_object(
            request,
            {
                "email": Field(320),
                "country": Field(2, required=False),
                "territory": Field(16, required=False),
            },
        )
        budget = deadline(request, self._settings.request_timeout_seconds)
        begin = identity_pb2.BeginEmailVerificationRequest(
            email=body["email"],
            country=body.get("country", ""),
            territory=body.get("territory", ""),
            client_ip=request[CLIENT_IP],
        )

        def call(stub: IdentityAsyncStub) -> Awaitable[identity_pb2.BeginEmailVerificationResponse]:
            return stub.BeginEmailVerification(begin, timeout=budget.remaining())

        started = await self._identity.call(call)
        return web.json_response(to_json(started), headers={"Cache-Control": "no-store"})

    async def email_complete(self, request: web.Request) -> web.Response:
        body = await json_object(request, {"verification_id": Field(64), "code": Field(6)})
        budget = deadline(request, self._settings.request_timeout_seconds)
        complete = identity_pb2.CompleteEmailVerificationRequest(
            verification_id=body["verification_id"], code=body["code"], client_ip=request[CLIENT_IP]
        )

        def call(stub: IdentityAsyncStub) -> Awaitable[identity_pb2.SignerCredential]:
            return stub.CompleteEmailVerification(complete, timeout=budget.remaining())

        credential = await self._identity.call(call)
        response = web.json_response(issued_view(credential), headers={"Cache-Control": "no-store"})
        self._hand_over(response, credential)
        return response

    async def session(self, request: web.Request) -> web.Response:
        credential = request.cookies.get(CREDENTIAL_COOKIE, "")
        if not credential:
            return web.json_response(signed_out(), headers={"Cache-Control": "no-store"})
        try:
            # Identity unreachable with no key known yet: its 503, not a
            # "signed out" that would send a signed-in person to sign in again.
            verified = await self._keys.verify(credential)
        except CredentialRejected:
            # Forged, expired or otherwise useless: the browser may forget it.
            response = web.json_response(signed_out(), headers={"Cache-Control": "no-store"})
            response.del_cookie(CREDENTIAL_COOKIE, path=CREDENTIAL_COOKIE_PATH)
            return response
        return web.json_response(verified_view(verified), headers={"Cache-Control": "no-store"})

    async def sign_out(self, request: web.Request) -> web.Response:
        response = web.json_response(signed_out(), headers={"Cache-Control": "no-store"})
        response.del_cookie(CREDENTIAL_COOKIE, path=CREDENTIAL_COOKIE_PATH)
        return response

    def _hand_over(self, response: web.StreamResponse, credential: identity_pb2.SignerCredential) -> None:
        lifetime = max(0, int(credential.expires_at.seconds - time.time()))
        response.set_cookie(
            CREDENTIAL_COOKIE,
            credential.token,
            max_age=lifetime,
            path=CREDENTIAL_COOKIE_PATH,
            httponly=True,
            secure=self._settings.cookie_secure,
            samesite="Strict",
        )

    def _sign_in_over(self, response: web.Response) -> web.Response:
        """A callback ends its sign-in, whatever the outcome: its state is
        good for one answer."""
        response.del_cookie(SIGN_IN_COOKIE, path=SIGN_IN_COOKIE_PATH)
        return response

    def _back_to_page(self, path: str, reason: str) -> web.Response:
        return web.Response(
            status=303, headers={"Location": _with_query(path, signin_error=reason), "Cache-Control": "no-store"}
        )
