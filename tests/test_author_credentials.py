"""Author credentials through identity's gRPC (issue 14, part 2): only an
identified sign-in of an adult with a name buys one; it says who the author
is (the same pseudonym as when they sign), what name they publish, and
nothing else; Sign never takes it; a refusal about the person spends no
token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import re
import secrets
import urllib.request
import uuid
from datetime import date
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import grpc
import jwt
import pytest

from petitions.v1 import identity_pb2
from servicekit import role_credentials
from servicekit.signer_credential import CredentialRejected, CredentialVerifier
from tests.errors import Rejection, rejection
from tests.harness import STAFF_PERSONAS
from tests.system import SystemClient

pytestmark = pytest.mark.stack

INITIAL = identity_pb2.DISPLAY_NAME_FORM_GIVEN_NAME_AND_INITIAL
FULL = identity_pb2.DISPLAY_NAME_FORM_FULL_NAME


def persona(prefix: str = "author") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def identified_token(
    system: SystemClient,
    name: str,
    *,
    given_name: str | None = None,
    family_name: str | None = None,
    birthdate: str = "1990-01-01",
    provider: str = "",
) -> str:
    """An identified ID token from the dev provider, with the names asked
    for (None: the persona's default names; "": none at all). Every name
    used is a raw identity the privacy audit looks for in every store: a
    credential is issued here, nothing is published, so no name may be
    stored. (Names of its own: other tests publish names such as Dupont as
    petition content, by consent.)"""
    system.raw_identities.update({f"dev-persona:{name}", name})
    if name not in STAFF_PERSONAS:
        # A staff member's default name is stored by design: staff act in
        # their own name in the audit trail.
        system.raw_identities.add(name.title())
    body: dict[str, object] = {
        "persona": name,
        "audience": "petitions-test",
        "identified": True,
        "birthdate": birthdate,
    }
    for claim, value in (("given_name", given_name), ("family_name", family_name)):
        if value is not None:
            body[claim] = value
            system.raw_identities.add(value.strip())
    request = urllib.request.Request(
        f"{provider or system.namespace.identified_devidp_url}/dev/id-token",
        json.dumps(body).encode(),
        {"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["id_token"])


def exchange_author(
    system: SystemClient, id_token: str, form: identity_pb2.DisplayNameForm.ValueType = INITIAL
) -> identity_pb2.AuthorCredential:
    reply: identity_pb2.AuthorCredential = system.identity.ExchangeAuthorIdToken(
        identity_pb2.ExchangeAuthorIdTokenRequest(id_token=id_token, display_name=form), timeout=10
    )
    return reply


def refused_author(
    system: SystemClient, id_token: str, form: identity_pb2.DisplayNameForm.ValueType = INITIAL
) -> Rejection:
    with pytest.raises(grpc.RpcError) as raised:
        exchange_author(system, id_token, form)
    return rejection(raised.value)


def verifier(system: SystemClient) -> CredentialVerifier:
    keys = system.identity.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=5)
    return CredentialVerifier(keys.jwks_json)


def years_ago(years: int, today: date | None = None) -> date:
    today = today or date.today()
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def test_an_identified_adult_gets_an_author_credential_that_sign_refuses(system: SystemClient) -> None:
    before = system.metric_value("identity", 'petitions_identity_role_credentials_issued_total{kind="author"}')
    token = identified_token(system, persona(), given_name="Maëlys", family_name="Quintard-Ossé")

    credential = exchange_author(system, token)

    assert credential.display_name == "Maëlys Q."
    claims = role_credentials.verify_author(verifier(system), credential.token)
    assert (claims.author, claims.display_name, claims.adult) == (credential.author, "Maëlys Q.", True)
    assert len(credential.author) == 64
    assert int(credential.expires_at.seconds) == int(claims.expires_at)
    payload = jwt.decode(credential.token, options={"verify_signature": False})
    # An hour by default: long enough to write a petition.
    assert payload["exp"] - payload["iat"] == 3600
    # Only the pseudonym and the published name: no subject, no birthdate,
    # no family name beyond its initial.
    assert set(payload) == {"iss", "aud", "sub", "nam", "adl", "iat", "exp", "jti"}
    assert "Quintard" not in json.dumps(payload, ensure_ascii=False)
    with pytest.raises(grpc.RpcError) as signed:
        system.sign(credential.token, f"no-such-{uuid.uuid4().hex[:8]}")
    assert rejection(signed.value).code == grpc.StatusCode.UNAUTHENTICATED
    after = system.metric_value("identity", 'petitions_identity_role_credentials_issued_total{kind="author"}')
    assert after - before == 1


def test_an_author_credential_is_no_signer_credential_and_the_other_way_round(system: SystemClient) -> None:
    keys = verifier(system)
    author = exchange_author(system, identified_token(system, persona()))
    signer = system.exchange(identified_token(system, persona("signer")))

    with pytest.raises(CredentialRejected):
        keys.verify(author.token)
    with pytest.raises(CredentialRejected):
        role_credentials.verify_author(keys, signer.token)
    with pytest.raises(CredentialRejected):
        role_credentials.verify_staff(keys, author.token)


@pytest.mark.parametrize(
    ("form", "given", "family", "shown"),
    [
        (identity_pb2.DISPLAY_NAME_FORM_UNSPECIFIED, "Marie", "Quillardet-Laval", "Marie Q."),
        (INITIAL, "Marie", "Quillardet-Laval", "Marie Q."),
        (FULL, "Marie", "Quillardet-Laval", "Marie Quillardet-Laval"),
        # The provider's spacing is not the author's choice of name.
        (FULL, "  Jean   Aimé ", "\tÉtiennard ", "Jean Aimé Étiennard"),
        (INITIAL, "Jean Aimé", "étiennard", "Jean Aimé É."),
    ],
)
def test_the_display_name_is_the_form_the_author_chose(
    system: SystemClient, form: identity_pb2.DisplayNameForm.ValueType, given: str, family: str, shown: str
) -> None:
    credential = exchange_author(
        system, identified_token(system, persona(), given_name=given, family_name=family), form
    )

    assert credential.display_name == shown
    assert role_credentials.verify_author(verifier(system), credential.token).display_name == shown


def test_an_unknown_display_name_form_is_an_invalid_argument(system: SystemClient) -> None:
    token = identified_token(system, persona())

    found = refused_author(system, token, 7)  # type: ignore[arg-type]

    assert (found.code, found.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["display_name"])
    # Refused before the token was even looked at: it still buys a credential.
    assert exchange_author(system, token).display_name


@pytest.mark.parametrize(
    ("birthdate", "why"),
    [
        pytest.param("minor", "at least 18", id="17-years-old"),
        pytest.param("tomorrow-18", "at least 18", id="18-tomorrow"),
        pytest.param("", "no birthdate", id="no-birthdate"),
        pytest.param("1990-13-01", "not a date", id="not-a-date"),
        # ISO 8601's basic form is a date to fromisoformat, not a birthdate claim.
        pytest.param("19900101", "not a date", id="basic-format"),
    ],
)
def test_someone_not_known_adult_gets_no_author_credential_and_keeps_the_token(
    system: SystemClient, birthdate: str, why: str
) -> None:
    today = date.today()
    if birthdate == "minor":
        birthdate = years_ago(17, today).isoformat()
    elif birthdate == "tomorrow-18":
        # Turns 18 tomorrow: still 17 today.
        birthdate = date.fromordinal(years_ago(18, today).toordinal() + 1).isoformat()
    token = identified_token(system, persona("minor"), birthdate=birthdate)

    found = refused_author(system, token)

    assert (found.code, found.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AUTHOR_NOT_ADULT"), found
    assert why in found.message
    # Nothing was spent: the same token still signs in the person as a signer,
    # and that credential says what is known about their age.
    signer = system.exchange(token)
    assert signer.claims.adult is False
    assert signer.claims.adult_basis == identity_pb2.ADULT_BASIS_UNSPECIFIED


def test_someone_who_turned_18_today_is_an_author(system: SystemClient) -> None:
    today = date.today()
    if (today.month, today.day) == (2, 29):
        pytest.skip("no one turns 18 on a 29 February that has no 29 February 18 years before")
    token = identified_token(system, persona(), birthdate=years_ago(18, today).isoformat())

    assert exchange_author(system, token).display_name


def test_an_anonymous_sign_in_cannot_make_an_author(system: SystemClient) -> None:
    name = persona()
    token = system.id_token(name)

    found = refused_author(system, token)

    assert (found.code, found.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDENTIFIED_SIGN_IN_REQUIRED"), found
    assert system.namespace.devidp_url in found.message
    assert system.exchange(token).claims.signer


@pytest.mark.parametrize(
    ("given", "family", "claim"),
    [("", "Quillardet", "given_name"), ("Marie", "", "family_name"), ("   ", "Quillardet", "given_name")],
)
def test_a_sign_in_without_a_name_gets_no_author_credential(
    system: SystemClient, given: str, family: str, claim: str
) -> None:
    token = identified_token(system, persona(), given_name=given, family_name=family)

    found = refused_author(system, token)

    assert (found.code, found.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NAME_MISSING"), found
    assert claim in found.message
    assert system.exchange(token).claims.signer


def test_one_person_is_one_pseudonym_as_author_and_as_signer(system: SystemClient) -> None:
    name = persona()

    author = exchange_author(system, identified_token(system, name))
    signer = system.exchange(identified_token(system, name))
    elsewhere = system.exchange(system.id_token(name))

    assert author.author == signer.claims.signer
    # The pseudonym is per provider: the same subject at another issuer is
    # another account.
    assert elsewhere.claims.signer != author.author


def test_an_author_id_token_is_spent_once(system: SystemClient) -> None:
    token = identified_token(system, persona())
    exchange_author(system, token)

    again = refused_author(system, token)
    assert (again.code, again.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ID_TOKEN_REUSED")
    with pytest.raises(grpc.RpcError) as as_signer:
        system.exchange(token)
    assert rejection(as_signer.value).reason == "ID_TOKEN_REUSED"


def test_a_forged_author_token_is_refused_as_any_token_is(system: SystemClient) -> None:
    header, payload, signature = identified_token(system, persona()).split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"

    found = refused_author(system, forged)

    assert (found.code, found.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ID_TOKEN_REJECTED")


async def code_flow_token(provider: str, scope: str, nonce: str, typed: dict[str, str]) -> tuple[str, str]:
    """The dev provider's authorization code flow as a relying party and a
    browser drive it: the form it shows for this scope, the fields typed
    into it, then the code for an ID token. Returns the form and the token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = "http://127.0.0.1:9/callback"
    query = {
        "response_type": "code",
        "client_id": "petitions-test",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": "st",
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{provider}/authorize", params=query) as response:
            form = await response.text()
            assert response.status == 200, form
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
        fields = {name: html.unescape(value) for name, value in hidden.items()}
        fields.update(country="FR", territory="75", **typed)
        async with http.post(f"{provider}/authorize", data=fields, allow_redirects=False) as response:
            assert response.status == 303, await response.text()
            code = dict(parse_qsl(urlsplit(response.headers["Location"]).query))["code"]
        grant = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "petitions-test",
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        async with http.post(f"{provider}/token", data=grant) as response:
            answer = await response.json()
            assert response.status == 200, answer
    return form, str(answer["id_token"])


def test_the_identified_provider_s_sign_in_page_asks_for_the_names_the_scope_wants(system: SystemClient) -> None:
    name = persona()
    system.raw_identities.update({f"dev-persona:{name}", name, "Honorine", "Belcourt-Aymé"})
    provider = system.namespace.identified_devidp_url
    typed = {"persona": name, "given_name": "Honorine", "family_name": "Belcourt-Aymé", "birthdate": "1985-06-30"}

    form, token = asyncio.run(code_flow_token(provider, "openid profile", "n-1", typed))
    credential: identity_pb2.AuthorCredential = system.identity.ExchangeAuthorIdToken(
        identity_pb2.ExchangeAuthorIdTokenRequest(id_token=token, nonce="n-1", display_name=FULL), timeout=10
    )

    assert 'name="birthdate"' in form
    assert credential.display_name == "Honorine Belcourt-Aymé"
    # Asked for no identity claim, the same page is the anonymous sign-in.
    plain_form, plain = asyncio.run(code_flow_token(provider, "openid", "n-2", {"persona": name}))
    assert 'name="birthdate"' not in plain_form
    assert "given_name" not in jwt.decode(plain, options={"verify_signature": False})


def test_a_minor_signing_in_through_the_identified_page_is_no_author(system: SystemClient) -> None:
    name = persona("minor")
    system.raw_identities.update({f"dev-persona:{name}", name})
    born = years_ago(16).isoformat()
    typed = {"persona": name, "birthdate": born}

    _, token = asyncio.run(code_flow_token(system.namespace.identified_devidp_url, "openid birthdate", "n-3", typed))
    with pytest.raises(grpc.RpcError) as raised:
        system.identity.ExchangeAuthorIdToken(
            identity_pb2.ExchangeAuthorIdTokenRequest(id_token=token, nonce="n-3"), timeout=10
        )

    found = rejection(raised.value)
    # Refused for the birthdate typed in, not for the lack of one.
    assert (found.reason, "at least 18" in found.message) == ("AUTHOR_NOT_ADULT", True), found
