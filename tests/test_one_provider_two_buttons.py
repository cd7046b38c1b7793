"""One national provider, two buttons: FranceConnect is one issuer with two
client registrations, an anonymous one to sign and an identified one to
deposit. Identity trusts the issuer twice, told apart by the token's audience
(or its authorized party), and the person keeps one pseudonym."""

from __future__ import annotations

import uuid

import grpc
import pytest

from petitions.v1 import identity_pb2
from tests.errors import rejection
from tests.harness import SIGNING_BUTTON_AUDIENCE
from tests.system import SystemClient


def test_the_same_issuer_is_anonymous_for_one_registration_and_identified_for_the_other(system: SystemClient) -> None:
    persona = f"two-buttons-{uuid.uuid4().hex[:8]}"
    signing_button = system.id_token(persona, identified=True, audience=SIGNING_BUTTON_AUDIENCE, published_name=True)
    signer = system.exchange(signing_button)
    # Anonymous mode: no birthdate read, adult by the provider's policy.
    assert (signer.claims.adult, signer.claims.adult_basis) == (True, identity_pb2.ADULT_BASIS_PROVIDER_POLICY)

    # The signing button's token does not make an author.
    with pytest.raises(grpc.RpcError) as refused:
        system.identity.ExchangeAuthorIdToken(
            identity_pb2.ExchangeAuthorIdTokenRequest(
                id_token=system.id_token(
                    persona, identified=True, audience=SIGNING_BUTTON_AUDIENCE, published_name=True
                )
            ),
            timeout=10,
        )
    found = rejection(refused.value)
    assert (found.code, found.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDENTIFIED_SIGN_IN_REQUIRED")

    # The deposit button's token does, for the same person: one pseudonym.
    author = system.author_credential(persona)
    assert author.author == signer.claims.signer
