"""Signing in: the OIDC code flow and the email code, both ending with a
signer credential from identity that the gateway hands to the browser in an
HttpOnly, SameSite=Strict cookie (page scripts cannot read it; other sites
cannot make the browser send it). API clients may send it as a Bearer token
instead.

Authors sign in apart (FranceConnect's second, identified button): the same
code flow against the identified provider, with its own sign-in cookie and
callback, ends with an author credential (ExchangeAuthorIdToken) in a cookie
of its own, `petitions_author`. The two never mix: a signer cookie signs,
an author cookie deposits, and neither is accepted where the other is.
Staff never sign in here: staff tools are API clients sending a Bearer
staff credential.

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
from servicekit import role_credentials
from servicekit.signer_credential import CredentialRejected, VerifiedCredential
from services.gateway.backends import Backend
from services.gateway.credential_keys import CredentialKeys
from services.gateway.http_errors import ApiError, invalid, unauthenticated
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
AUTHOR_COOKIE = "petitions_author"
AUTHOR_SIGN_IN_COOKIE = "petitions_author_signin"
AUTHOR_SIGN_IN_COOKIE_PATH = "/auth/author/"
# Every cookie that signs a request in: a write it signs must come from the
# gateway's own page (same_origin.py).
SIGNING_IN_COOKIES = (CREDENTIAL_COOKIE, AUTHOR_COOKIE)
MAX_CREDENTIAL_LENGTH = 4096
# The author's consent to publish this much of their verified name.
DISPLAY_NAME_FORMS = {
    "initial": identity_pb2.DISPLAY_NAME_FORM_GIVEN_NAME_AND_INITIAL,
    "full": identity_pb2.DISPLAY_NAME_FORM_FULL_NAME,
}
DISPLAY_NAME_CHOICE = "display_name"

_METHOD_NAMES = {"oidc": "VERIFICATION_METHOD_OIDC", "email": "VERIFICATION_METHOD_EMAIL"}


def _bearer_or_cookie(request: web.Request, cookie: str | None, kind: str, sign_in: str) -> str:
    """A credential from Authorization: Bearer (API clients) or, when the
    route takes one, its cookie (the page). Missing → 401, before any
    backend is asked."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("CREDENTIAL_MALFORMED", f"Authorization must be 'Bearer <{kind} credential>'")
        credential = token.strip()
    else:
        credential = request.cookies.get(cookie, "") if cookie is not None else ""
        if not credential:
            raise unauthenticated("CREDENTIAL_MISSING", f"{sign_in}: this request carries no {kind} credential")
    if len(credential) > MAX_CREDENTIAL_LENGTH or not credential.isascii() or not credential.isprintable():
        raise unauthenticated("CREDENTIAL_MALFORMED", f"the {kind} credential is not a compact JWS")
    return credential


def credential_of(request: web.Request) -> str:
    """The signer credential: Bearer or the signer cookie."""
    return _bearer_or_cookie(request, CREDENTIAL_COOKIE, "signer", "sign in first")


def author_credential_of(request: web.Request) -> str:
    """The author credential: Bearer or the author cookie (never the signer's)."""
    return _bearer_or_cookie(request, AUTHOR_COOKIE, "author", "sign in as an author first (/auth/author/start)")


def staff_credential_of(request: web.Request) -> str:
    """The staff credential: Bearer only. Staff tools are API clients; a
    cookie is never taken for a staff call, so no page can act as staff."""
    return _bearer_or_cookie(
        request, None, "staff", "staff calls need 'Authorization: Bearer <staff credential>' (cookies are not taken)"
    )


def bearer_metadata(credential: str) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata the petitions service reads a caller's credential from."""
    return (("authorization", f"Bearer {credential}"),)


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


def author_view(claims: role_credentials.AuthorClaims | None) -> dict[str, Any]:
    """The author sign-in of this browser: the name it publishes, until when."""
    if claims is None or claims.expires_at <= time.time():
        return {"signed_in": False}
    return {
        "signed_in": True,
        "display_name": claims.display_name,
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims.expires_at)),
    }


def _with_query(path: str, **parameters: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{urlencode(parameters)}"


class SignIn:
    def __init__(
        self,
        settings: GatewaySettings,
        identity: Backend[IdentityAsyncStub],
        flow: OidcCodeFlow,
        keys: CredentialKeys,
        author_flow: OidcCodeFlow,
    ):
        self._settings = settings
        self._identity = identity
        self._flow = flow
        self._keys = keys
        self._author_flow = author_flow

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

    async def author_start(self, request: web.Request) -> web.Response:
        """The identified sign-in of an author, with the display name form
        they consent to publish (display_name=initial, the default, or full)."""
        return_to = request.query.get("return_to")
        form = request.query.get(DISPLAY_NAME_CHOICE, "initial")
        if form not in DISPLAY_NAME_FORMS:
            # The page builds this link: another value is its bug, not the
            # person's, so a 400 rather than a trip back to the page.
            raise invalid(DISPLAY_NAME_CHOICE, f"must be one of {', '.join(DISPLAY_NAME_FORMS)}")
        try:
            start = await self._author_flow.begin(return_to, {DISPLAY_NAME_CHOICE: form})
        except SignInFailed as failed:
            return self._back_to_page(safe_return_path(return_to), failed.reason)
        response = web.Response(status=302, headers={"Location": start.authorization_url, "Cache-Control": "no-store"})
        response.set_cookie(
            AUTHOR_SIGN_IN_COOKIE,
            start.cookie,
            max_age=self._settings.oidc_state_seconds,
            path=AUTHOR_SIGN_IN_COOKIE_PATH,
            httponly=True,
            secure=self._settings.cookie_secure,
            # Lax, not Strict: the callback is a navigation from the provider's site.
            samesite="Lax",
        )
        return response

    async def author_callback(self, request: web.Request) -> web.Response:
        cookie = request.cookies.get(AUTHOR_SIGN_IN_COOKIE)
        try:
            completed = await self._author_flow.complete(request.query, cookie)
        except SignInFailed as failed:
            return self._author_sign_in_over(self._back_to_page(self._author_flow.return_path(cookie), failed.reason))
        form = DISPLAY_NAME_FORMS.get(completed.choices.get(DISPLAY_NAME_CHOICE, ""))
        if form is None:
            # The start always seals a valid choice; a cookie without one
            # was sealed before this field existed: start again.
            return self._author_sign_in_over(self._back_to_page(completed.return_to, "SIGN_IN_EXPIRED"))
        budget = deadline(request, self._settings.request_timeout_seconds)
        exchange = identity_pb2.ExchangeAuthorIdTokenRequest(
            id_token=completed.id_token, nonce=completed.nonce, client_ip=request[CLIENT_IP], display_name=form
        )

        def call(stub: IdentityAsyncStub) -> Awaitable[identity_pb2.AuthorCredential]:
            return stub.ExchangeAuthorIdToken(exchange, timeout=budget.remaining())

        try:
            credential = await self._identity.call(call)
        except ApiError as error:
            # A minor (AUTHOR_NOT_ADULT), an anonymous provider, a reused token.
            return self._author_sign_in_over(self._back_to_page(completed.return_to, error.reason))
        response = web.Response(status=303, headers={"Location": completed.return_to, "Cache-Control": "no-store"})
        response.set_cookie(
            AUTHOR_COOKIE,
            credential.token,
            max_age=max(0, int(credential.expires_at.seconds - time.time())),
            path=CREDENTIAL_COOKIE_PATH,
            httponly=True,
            secure=self._settings.cookie_secure,
            samesite="Strict",
        )
        return self._author_sign_in_over(response)

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
        """Both sign-ins of this browser, each checked against identity's
        keys (identity unreachable with no key known yet: its 503, not a
        "signed out" that would send a signed-in person to sign in again)."""
        forget: list[str] = []
        view = signed_out()
        credential = request.cookies.get(CREDENTIAL_COOKIE, "")
        if credential:
            try:
                view = verified_view(await self._keys.verify(credential))
            except CredentialRejected:
                # Forged, expired or otherwise useless: the browser may forget it.
                forget.append(CREDENTIAL_COOKIE)
        author: role_credentials.AuthorClaims | None = None
        author_token = request.cookies.get(AUTHOR_COOKIE, "")
        if author_token:
            try:
                author = await self._keys.verify_with(role_credentials.verify_author, author_token)
            except CredentialRejected:
                forget.append(AUTHOR_COOKIE)
        response = web.json_response({**view, "author": author_view(author)}, headers={"Cache-Control": "no-store"})
        for cookie in forget:
            response.del_cookie(cookie, path=CREDENTIAL_COOKIE_PATH)
        return response

    async def sign_out(self, request: web.Request) -> web.Response:
        """Forgets both sign-ins of this browser."""
        response = web.json_response(
            {**signed_out(), "author": author_view(None)}, headers={"Cache-Control": "no-store"}
        )
        response.del_cookie(CREDENTIAL_COOKIE, path=CREDENTIAL_COOKIE_PATH)
        response.del_cookie(AUTHOR_COOKIE, path=CREDENTIAL_COOKIE_PATH)
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

    def _author_sign_in_over(self, response: web.Response) -> web.Response:
        response.del_cookie(AUTHOR_SIGN_IN_COOKIE, path=AUTHOR_SIGN_IN_COOKIE_PATH)
        return response

    def _back_to_page(self, path: str, reason: str) -> web.Response:
        return web.Response(
            status=303, headers={"Location": _with_query(path, signin_error=reason), "Cache-Control": "no-store"}
        )
