"""DEVELOPMENT ONLY: the authorization code flow of the dev provider.

/authorize shows a form where one types a persona (no password: anyone is
anyone here), then sends the browser back to the relying party with a
one-time code and its state. /token exchanges that code, once and within a
minute, for an ID token bound to the nonce of the authorization request,
checking the redirect URI, the client and the PKCE verifier as a real
provider would, so the gateway's flow is tested against the same rules.

As a real provider releases claims by scope, a request whose scope asks for
any of the identity claims (`profile`, or FranceConnect's `given_name`,
`family_name`, `birthdate`) gets an identified token: the form then also
asks for the persona's given name, family name and birthdate (a minor's is
a birthdate like any other).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode, urlsplit

CODE_TTL_SECONDS = 60
MAX_PENDING_CODES = 10_000
MAX_PARAMETER_LENGTH = 2048
# Used with fullmatch (whole strings only; `$` would let "alice\n" through).
PERSONA = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
COUNTRY = re.compile(r"\A[A-Z]{2}\Z")
TERRITORY = re.compile(r"\A[A-Za-z0-9-]{1,16}\Z")
# Letters of any script, with spaces, hyphens and apostrophes between them.
NAME = re.compile(r"\A[^\W\d_]+(?:[ '\u2019-][^\W\d_]+)*\Z")
MAX_NAME_LENGTH = 64
BIRTHDATE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
IDENTITY_SCOPES = frozenset({"profile", "given_name", "family_name", "birthdate"})


class AuthorizationRefused(Exception):
    """A request the provider will not serve; the text says why (dev tool)."""


class GrantRefused(Exception):
    """An RFC 6749 token error: error is its code, e.g. invalid_grant."""

    def __init__(self, error: str, description: str):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


def asks_for_identity(scope: str) -> bool:
    """True when a scope asks for any identity claim."""
    return not IDENTITY_SCOPES.isdisjoint(scope.split())


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str
    nonce: str
    code_challenge: str
    scope: str = ""

    @property
    def identified(self) -> bool:
        """The relying party asked for identity claims."""
        return asks_for_identity(self.scope)


@dataclass(frozen=True)
class IdentityClaims:
    """What an identified sign-in's persona is called and was born; an empty
    name means the persona's default one."""

    given_name: str = ""
    family_name: str = ""
    birthdate: str = "1990-01-01"


@dataclass(frozen=True)
class PendingCode:
    request: AuthorizationRequest
    persona: str
    country: str
    territory: str
    expires_at: float
    identity: IdentityClaims | None = None


def authorization_request(parameters: dict[str, str]) -> AuthorizationRequest:
    """Checks the relying party's parameters (query of GET /authorize, or the
    hidden fields of the form it posts back)."""
    if any(len(value) > MAX_PARAMETER_LENGTH for value in parameters.values()):
        raise AuthorizationRefused("a parameter is too long")
    if parameters.get("response_type") != "code":
        raise AuthorizationRefused("response_type must be 'code'")
    client_id = parameters.get("client_id", "")
    if not client_id:
        raise AuthorizationRefused("client_id is required")
    redirect_uri = parameters.get("redirect_uri", "")
    target = urlsplit(redirect_uri)
    if target.scheme not in ("http", "https") or not target.netloc or target.fragment:
        raise AuthorizationRefused("redirect_uri must be an absolute http(s) URL without a fragment")
    challenge = parameters.get("code_challenge", "")
    if challenge and parameters.get("code_challenge_method") != "S256":
        raise AuthorizationRefused("code_challenge_method must be S256")
    return AuthorizationRequest(
        client_id,
        redirect_uri,
        parameters.get("state", ""),
        parameters.get("nonce", ""),
        challenge,
        parameters.get("scope", ""),
    )


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class CodeStore:
    """One-time codes, in memory: a dev provider serves one machine."""

    def __init__(self) -> None:
        self._codes: dict[str, PendingCode] = {}

    def issue(self, request: AuthorizationRequest, persona: str, country: str, territory: str) -> str:
        """A code for an anonymous sign-in."""
        return self._issue(request, persona, country, territory, None)

    def issue_identified(
        self, request: AuthorizationRequest, persona: str, country: str, territory: str, identity: IdentityClaims
    ) -> str:
        """A code for an identified sign-in: its token carries names and birthdate."""
        return self._issue(request, persona, country, territory, identity)

    def _issue(
        self,
        request: AuthorizationRequest,
        persona: str,
        country: str,
        territory: str,
        identity: IdentityClaims | None,
    ) -> str:
        if not PERSONA.fullmatch(persona):
            raise AuthorizationRefused("the persona name must be 1 to 64 letters, digits, '.', '_' or '-'")
        if not COUNTRY.fullmatch(country):
            raise AuthorizationRefused("the country must be two capital letters, e.g. FR")
        if not TERRITORY.fullmatch(territory):
            raise AuthorizationRefused("the territory must be 1 to 16 letters, digits or '-', e.g. 75")
        if identity is not None:
            _check_identity(identity)
        now = time.time()
        for code in [c for c, pending in self._codes.items() if pending.expires_at < now]:
            del self._codes[code]
        if len(self._codes) >= MAX_PENDING_CODES:
            raise AuthorizationRefused("too many sign-ins in progress; retry in a minute")
        code = secrets.token_urlsafe(24)
        self._codes[code] = PendingCode(request, persona, country, territory, now + CODE_TTL_SECONDS, identity)
        return code

    def redeem(self, code: str, client_id: str, redirect_uri: str, verifier: str) -> PendingCode:
        """The pending sign-in of the code, which is spent whatever happens next."""
        pending = self._codes.pop(code, None)
        if pending is None or pending.expires_at < time.time():
            raise GrantRefused("invalid_grant", "the code is unknown, used or expired")
        if pending.request.client_id != client_id:
            raise GrantRefused("invalid_grant", "the code was issued to another client")
        if pending.request.redirect_uri != redirect_uri:
            raise GrantRefused("invalid_grant", "redirect_uri differs from the authorization request's")
        if pending.request.code_challenge and not hmac.compare_digest(_s256(verifier), pending.request.code_challenge):
            raise GrantRefused("invalid_grant", "the code_verifier does not match the code_challenge")
        return pending


def _check_identity(identity: IdentityClaims) -> None:
    for label, name in (("given name", identity.given_name), ("family name", identity.family_name)):
        if name and (len(name) > MAX_NAME_LENGTH or not NAME.fullmatch(name)):
            raise AuthorizationRefused(
                f"the {label} must be letters, with single spaces, hyphens or apostrophes between them"
                f" (at most {MAX_NAME_LENGTH})"
            )
    if not BIRTHDATE.fullmatch(identity.birthdate):
        raise AuthorizationRefused("the birthdate must be YYYY-MM-DD, e.g. 1990-01-01")


def redirect_with_code(request: AuthorizationRequest, code: str) -> str:
    parameters = {"code": code}
    if request.state:
        parameters["state"] = request.state
    separator = "&" if "?" in request.redirect_uri else "?"
    return f"{request.redirect_uri}{separator}{urlencode(parameters)}"


def sign_in_form(parameters: dict[str, str], error: str = "") -> str:
    """The persona form. Every value from the query is escaped."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(parameters.get(name, ""))}">'
        for name in (
            "response_type",
            "client_id",
            "redirect_uri",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "scope",
        )
    )
    identity = ""
    if asks_for_identity(parameters.get("scope", "")):
        identity = f"""<fieldset><legend>Identified sign-in: the relying party asks for your identity</legend>
<p><label for="given_name">Given name</label> <input id="given_name" name="given_name"
 value="{escape(parameters.get("given_name", ""))}" placeholder="from the persona"></p>
<p><label for="family_name">Family name</label> <input id="family_name" name="family_name"
 value="{escape(parameters.get("family_name", ""))}" placeholder="Persona"></p>
<p><label for="birthdate">Birthdate</label> <input id="birthdate" name="birthdate"
 value="{escape(parameters.get("birthdate", "1990-01-01"))}" required></p>
</fieldset>
"""
    problem = f'<p role="alert" class="error">{escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dev identity provider — sign in</title></head>
<body>
<main>
<h1>Development identity provider</h1>
<p><strong>DEVELOPMENT ONLY.</strong> Anyone may be anyone here: type a persona name.</p>
{problem}
<form method="post" action="authorize">
{hidden}
<p><label for="persona">Persona</label> <input id="persona" name="persona" required autocomplete="off"></p>
<p><label for="country">Country</label> <input id="country" name="country" value="FR" required></p>
<p><label for="territory">Territory</label> <input id="territory" name="territory" value="75" required></p>
{identity}<p><button id="sign-in" type="submit">Sign in</button></p>
</form>
</main>
</body>
</html>
"""
