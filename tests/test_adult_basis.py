"""What a signer credential's adulthood rests on (issue 14, part 5): a
birthdate from an identified provider, the policy of a provider that serves
adults only, an email signer's own declaration, or nothing. The basis
travels in the credential (claim adb) and in the decoded claims, so a
petition type can say which bases it accepts."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import date

import pytest
import redis

from petitions.v1 import identity_pb2
from servicekit.signer_credential import CredentialVerifier
from tests.system import SystemClient
from tests.test_author_credentials import identified_token, years_ago

pytestmark = pytest.mark.stack

UNSPECIFIED = identity_pb2.ADULT_BASIS_UNSPECIFIED


def verifier(system: SystemClient) -> CredentialVerifier:
    keys = system.identity.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=5)
    return CredentialVerifier(keys.jwks_json)


def adults_provider_token(system: SystemClient, persona: str) -> str:
    """An anonymous-mode token from the provider configured as serving adults only."""
    system.raw_identities.update({f"dev-persona:{persona}", persona, persona.title()})
    body = json.dumps({"persona": persona, "audience": "petitions-test"}).encode()
    request = urllib.request.Request(
        f"{system.namespace.adults_devidp_url}/dev/id-token", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["id_token"])


def email_credential(system: SystemClient, declares_adult: bool | None) -> identity_pb2.SignerCredential:
    address = f"adult-{uuid.uuid4().hex[:10]}@example.org"
    system.raw_identities.add(address)
    request = identity_pb2.BeginEmailVerificationRequest(email=address, country="FR", territory="13")
    if declares_adult is not None:
        request.declares_adult = declares_adult
    started = system.identity.BeginEmailVerification(request, timeout=15)
    return system.complete_email(started.verification_id, system.code_sent_to(address))


def signer_claims(system: SystemClient, credential: identity_pb2.SignerCredential) -> tuple[bool, str]:
    """The adulthood a verifier reads from the token itself."""
    verified = verifier(system).verify(credential.token)
    return verified.claims.adult, verified.claims.adult_basis


def test_an_adults_only_provider_makes_its_anonymous_signers_adults(system: SystemClient) -> None:
    credential = system.exchange(adults_provider_token(system, f"fc-{uuid.uuid4().hex[:8]}"))

    assert (credential.claims.adult, credential.claims.adult_basis) == (True, identity_pb2.ADULT_BASIS_PROVIDER_POLICY)
    assert signer_claims(system, credential) == (True, "provider")


def test_an_ordinary_anonymous_provider_says_nothing_of_age(system: SystemClient) -> None:
    credential = system.credential(f"anon-{uuid.uuid4().hex[:8]}")

    assert (credential.claims.adult, credential.claims.adult_basis) == (False, UNSPECIFIED)
    assert signer_claims(system, credential) == (False, "")


def test_an_identified_provider_decides_by_the_birthdate(system: SystemClient) -> None:
    adult = system.exchange(identified_token(system, f"born-{uuid.uuid4().hex[:8]}"))
    minor = system.exchange(
        identified_token(system, f"young-{uuid.uuid4().hex[:8]}", birthdate=years_ago(17, date.today()).isoformat())
    )

    assert (adult.claims.adult, adult.claims.adult_basis) == (True, identity_pb2.ADULT_BASIS_VERIFIED_BIRTHDATE)
    assert signer_claims(system, adult) == (True, "verified")
    assert (minor.claims.adult, minor.claims.adult_basis) == (False, UNSPECIFIED)
    assert signer_claims(system, minor) == (False, "")


def test_an_email_signer_who_declares_being_adult_is_a_declared_adult(system: SystemClient) -> None:
    credential = email_credential(system, declares_adult=True)

    assert (credential.claims.adult, credential.claims.adult_basis) == (True, identity_pb2.ADULT_BASIS_DECLARED)
    assert signer_claims(system, credential) == (True, "declared")


@pytest.mark.parametrize("declares_adult", [False, None], ids=["declares-false", "says-nothing"])
def test_an_email_signer_who_does_not_declare_is_not_adult(system: SystemClient, declares_adult: bool | None) -> None:
    credential = email_credential(system, declares_adult)

    assert (credential.claims.adult, credential.claims.adult_basis) == (False, UNSPECIFIED)
    assert signer_claims(system, credential) == (False, "")


def test_the_declaration_waits_in_redis_as_a_flag_beside_the_pseudonym(system: SystemClient) -> None:
    address = f"flag-{uuid.uuid4().hex[:10]}@example.org"
    system.raw_identities.add(address)
    started = system.identity.BeginEmailVerification(
        identity_pb2.BeginEmailVerificationRequest(email=address, declares_adult=True), timeout=15
    )
    store = redis.Redis.from_url(system.namespace.env(system.stack)["PETITIONS_REDIS_URL"])
    try:
        entry = store.hgetall(f"otp:{started.verification_id}")
    finally:
        store.close()

    assert entry[b"declares_adult"] == b"1"
    stored = b" ".join(item if isinstance(item, bytes) else item.encode() for pair in entry.items() for item in pair)
    assert address.split("@")[0].encode() not in stored
