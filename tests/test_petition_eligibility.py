"""Who may sponsor a petition (services/petitions/eligibility.py): the
petition's eligibility against a signer credential's claims, for every rule
and every adult basis. Pure logic, so tested on its own."""

from __future__ import annotations

import pytest

from petitions.v1 import identity_pb2, petition_pb2
from servicekit.errors import DomainError, ErrorKind
from servicekit.signer_credential import SignerClaims
from services.petitions.eligibility import check_eligible

OIDC = identity_pb2.VERIFICATION_METHOD_OIDC
EMAIL = identity_pb2.VERIFICATION_METHOD_EMAIL


def _claims(method: str = "oidc", country: str = "FR", adult: bool = False, basis: str = "") -> SignerClaims:
    return SignerClaims(
        signer="s-1", method=method, assurance_level="", country=country, territory="75", adult=adult, adult_basis=basis
    )


def _refusal(rules: petition_pb2.Eligibility, claims: SignerClaims) -> str:
    with pytest.raises(DomainError) as refused:
        check_eligible(rules, claims)
    assert (refused.value.kind, refused.value.reason) == (ErrorKind.FAILED_PRECONDITION, "NOT_ELIGIBLE")
    return refused.value.message


def test_no_rule_lets_anyone_sponsor() -> None:
    check_eligible(petition_pb2.Eligibility(), _claims(method="email", country="", adult=False))


def test_countries_are_matched_whole() -> None:
    rules = petition_pb2.Eligibility(countries=["FR", "BE"])
    check_eligible(rules, _claims(country="BE"))
    assert "FR" in _refusal(rules, _claims(country="DE"))
    _refusal(rules, _claims(country="F"))
    _refusal(rules, _claims(country=""))


@pytest.mark.parametrize(
    ("methods", "method", "allowed"),
    [
        ([OIDC], "oidc", True),
        ([OIDC], "email", False),
        ([EMAIL], "oidc", False),
        ([OIDC, EMAIL], "email", True),
        ([OIDC], "", False),
        ([], "email", True),
    ],
)
def test_the_allowed_verification_methods(
    methods: list[identity_pb2.VerificationMethod.ValueType], method: str, allowed: bool
) -> None:
    rules = petition_pb2.Eligibility(methods=methods)
    if allowed:
        check_eligible(rules, _claims(method=method))
    else:
        assert "verified by" in _refusal(rules, _claims(method=method))


@pytest.mark.parametrize(
    ("adult", "basis", "accept_declared", "allowed"),
    [
        (True, "verified", False, True),
        (True, "provider", False, True),
        (True, "declared", False, False),
        (True, "declared", True, True),
        (True, "", True, False),
        (False, "", True, False),
        # A basis without adulthood proves nothing.
        (False, "verified", False, False),
        (False, "declared", True, False),
    ],
)
def test_adults_only_and_what_proves_adulthood(adult: bool, basis: str, accept_declared: bool, allowed: bool) -> None:
    rules = petition_pb2.Eligibility(adults_only=True, accept_declared_adults=accept_declared)
    claims = _claims(adult=adult, basis=basis)
    if allowed:
        check_eligible(rules, claims)
    else:
        message = _refusal(rules, claims)
        assert "only adults" in message
        if adult and basis == "declared":
            assert "self-declared" in message


def test_declared_adults_are_accepted_only_where_adults_only_applies() -> None:
    # accept_declared_adults alone restricts nothing.
    check_eligible(petition_pb2.Eligibility(accept_declared_adults=True), _claims(adult=False))


def test_every_rule_applies_together() -> None:
    rules = petition_pb2.Eligibility(countries=["FR"], adults_only=True, methods=[OIDC])
    check_eligible(rules, _claims(method="oidc", country="FR", adult=True, basis="provider"))
    _refusal(rules, _claims(method="oidc", country="FR", adult=False))
    _refusal(rules, _claims(method="email", country="FR", adult=True, basis="verified"))
    _refusal(rules, _claims(method="oidc", country="BE", adult=True, basis="verified"))
