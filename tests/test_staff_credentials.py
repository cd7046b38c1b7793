"""Staff credentials through identity's gRPC (issue 14, part 7): a member of
staff signs in through an identified provider and gets the roles the
configuration (PETITIONS_STAFF_ROLES) gives them, in a credential no other
verifier takes; anyone else gets NOT_STAFF, and keeps their token."""

from __future__ import annotations

import json
import os
import uuid

import grpc
import jwt
import pytest

from petitions.v1 import identity_pb2
from servicekit import role_credentials
from servicekit.signer_credential import CredentialRejected, CredentialVerifier
from tests.errors import Rejection, rejection
from tests.harness import STAFF_PERSONAS, run_module
from tests.system import SystemClient
from tests.test_author_credentials import exchange_author, identified_token

pytestmark = pytest.mark.stack

ROLE_ENUMS = {
    "moderator": identity_pb2.STAFF_ROLE_MODERATOR,
    "clerk": identity_pb2.STAFF_ROLE_CLERK,
    "administrator": identity_pb2.STAFF_ROLE_ADMINISTRATOR,
}


def exchange_staff(system: SystemClient, id_token: str) -> identity_pb2.StaffCredential:
    reply: identity_pb2.StaffCredential = system.identity.ExchangeStaffIdToken(
        identity_pb2.ExchangeStaffIdTokenRequest(id_token=id_token), timeout=10
    )
    return reply


def refused_staff(system: SystemClient, id_token: str) -> Rejection:
    with pytest.raises(grpc.RpcError) as raised:
        exchange_staff(system, id_token)
    return rejection(raised.value)


def verifier(system: SystemClient) -> CredentialVerifier:
    keys = system.identity.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=5)
    return CredentialVerifier(keys.jwks_json)


@pytest.mark.parametrize("persona", sorted(STAFF_PERSONAS))
def test_each_member_of_staff_gets_the_configured_roles(system: SystemClient, persona: str) -> None:
    before = system.metric_value("identity", 'petitions_identity_role_credentials_issued_total{kind="staff"}')
    token = identified_token(system, persona, given_name="Sidonie", family_name="Vautrin-Ibarra")

    credential = exchange_staff(system, token)

    expected = STAFF_PERSONAS[persona]
    assert list(credential.roles) == sorted(ROLE_ENUMS[role] for role in expected)
    assert credential.name == "Sidonie Vautrin-Ibarra"
    claims = role_credentials.verify_staff(verifier(system), credential.token)
    assert (claims.staff, claims.name, claims.roles) == (credential.staff, credential.name, frozenset(expected))
    # The staff pseudonym is the person's pseudonym with that provider.
    assert credential.staff == system.exchange(identified_token(system, persona)).claims.signer
    payload = jwt.decode(credential.token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 900
    assert int(credential.expires_at.seconds) == payload["exp"]
    after = system.metric_value("identity", 'petitions_identity_role_credentials_issued_total{kind="staff"}')
    assert after - before == 1


def test_someone_not_configured_is_not_staff_and_keeps_the_token(system: SystemClient) -> None:
    token = identified_token(system, f"visitor-{uuid.uuid4().hex[:8]}")

    found = refused_staff(system, token)

    assert (found.code, found.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_STAFF"), found
    assert system.exchange(token).claims.signer


def test_a_staff_persona_signed_in_anonymously_is_not_staff(system: SystemClient) -> None:
    # The configured subject, but at the anonymous provider: roles belong to
    # an identified sign-in, never to a pseudonymous one.
    # (The staff member's name is published in the audit trail by design,
    # so it is not one the privacy audit looks for.)
    token = system.id_token("staff-admin", published_name=True)

    found = refused_staff(system, token)

    assert (found.code, found.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDENTIFIED_SIGN_IN_REQUIRED"), found
    assert system.exchange(token).claims.signer


def test_a_member_of_staff_without_a_name_gets_no_credential(system: SystemClient) -> None:
    token = identified_token(system, "staff-clerk", given_name="", family_name="Vautrin-Ibarra")

    found = refused_staff(system, token)

    assert (found.code, found.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NAME_MISSING"), found
    assert exchange_staff(system, identified_token(system, "staff-clerk")).roles


def test_each_credential_is_accepted_by_its_own_verifier_only(system: SystemClient) -> None:
    keys = verifier(system)
    staff = exchange_staff(system, identified_token(system, "staff-moderator-a"))
    author = exchange_author(system, identified_token(system, "staff-moderator-a"))
    signer = system.exchange(identified_token(system, "staff-moderator-a"))

    for verify, token in (
        (role_credentials.verify_author, staff.token),
        (role_credentials.verify_staff, author.token),
        (role_credentials.verify_staff, signer.token),
    ):
        with pytest.raises(CredentialRejected):
            verify(keys, token)
    with pytest.raises(CredentialRejected):
        keys.verify(staff.token)
    with pytest.raises(grpc.RpcError) as signed:
        system.sign(staff.token, f"no-such-{uuid.uuid4().hex[:8]}")
    assert rejection(signed.value).code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ([{"subject": "dev-persona:x", "roles": ["superuser"]}], "superuser"),
        ([{"subject": "dev-persona:x", "roles": []}], "roles"),
        ([{"subject": "dev-persona:x", "roles": ["clerk"], "issuer": "http://127.0.0.1:1"}], "http://127.0.0.1:1"),
        (
            [{"subject": "dev-persona:x", "roles": ["clerk"]}, {"subject": "dev-persona:x", "roles": ["moderator"]}],
            "twice",
        ),
    ],
)
def test_a_bad_staff_entry_stops_identity_at_start_naming_it(
    system: SystemClient, entries: list[dict[str, object]], named: str
) -> None:
    env = system.namespace.env(system.stack)
    for entry in entries:
        entry.setdefault("issuer", system.namespace.identified_devidp_url)
    started = run_module(
        "services.identity",
        {
            **env,
            "PETITIONS_STAFF_ROLES": json.dumps(entries),
            # Never the session's identity: if it started, it would serve here.
            "PETITIONS_GRPC_ADDRESS": "127.0.0.1:0",
            "PETITIONS_METRICS_PORT": "0",
            "PATH": os.environ.get("PATH", ""),
        },
        timeout=30,
    )

    assert started.returncode != 0
    output = started.stdout + started.stderr
    assert [word for word in ("staff_roles", named, "dev-persona:x") if word not in output] == [], output[-2000:]
