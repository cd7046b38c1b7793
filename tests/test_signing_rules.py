"""Pure rules of signing, without any store: who may sign what, when."""

from __future__ import annotations

import pytest

from servicekit.errors import DomainError, ErrorKind
from servicekit.petition_view import PetitionState, ViewEligibility, ViewPetition
from servicekit.signer_credential import SignerClaims
from services.signing.intake import SignatureRequest, check_can_sign, validate
from services.signing.ledger import EntryState, LedgerEntry

NOW = 1_800_000_000.0
ADULT_IN_FRANCE = SignerClaims("s1", "oidc", "eidas2", "FR", "75", adult=True, adult_basis="verified")


def petition(**changes: object) -> ViewPetition:
    fields: dict[str, object] = {"id": "p-1", "state": PetitionState.OPEN, "opens_at": None, "closes_at": None}
    fields.update(changes)
    return ViewPetition(**fields)  # type: ignore[arg-type]


def signer(method: str = "oidc", *, adult: bool = False, basis: str = "") -> SignerClaims:
    return SignerClaims("s2", method, "", "FR", "75", adult=adult, adult_basis=basis)


ADULTS = ViewEligibility(adults_only=True)
ADULTS_OR_DECLARED = ViewEligibility(adults_only=True, accept_declared_adults=True)
OIDC_ONLY = ViewEligibility(methods=frozenset({"oidc"}))
EMAIL_ONLY = ViewEligibility(methods=frozenset({"email"}))


@pytest.mark.parametrize(
    ("changes", "claims", "reason"),
    [
        ({"state": PetitionState.DRAFT}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"state": PetitionState.CLOSED}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"state": PetitionState.CLASSED}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"state": PetitionState.SUBMITTED}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"state": PetitionState.UNSPECIFIED}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"closes_at": NOW - 1}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"opens_at": NOW + 60}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"eligibility": ViewEligibility(countries=frozenset({"BE"}))}, ADULT_IN_FRANCE, "NOT_ELIGIBLE"),
        ({"eligibility": ADULTS}, signer(), "NOT_ELIGIBLE"),
    ],
)
def test_refusals_are_failed_preconditions(changes: dict[str, object], claims: SignerClaims, reason: str) -> None:
    with pytest.raises(DomainError) as raised:
        check_can_sign(petition(**changes), "p-1", claims, NOW)
    assert (raised.value.kind, raised.value.reason) == (ErrorKind.FAILED_PRECONDITION, reason)


def test_a_petition_missing_from_the_view_is_not_found() -> None:
    with pytest.raises(DomainError) as raised:
        check_can_sign(None, "p-1", ADULT_IN_FRANCE, NOW)
    assert (raised.value.kind, raised.value.reason) == (ErrorKind.NOT_FOUND, "PETITION_NOT_FOUND")


def test_an_open_petition_inside_its_window_accepts_an_eligible_signer() -> None:
    open_petition = petition(
        opens_at=NOW - 60, closes_at=NOW + 60, eligibility=ViewEligibility(frozenset({"FR"}), adults_only=True)
    )
    assert check_can_sign(open_petition, "p-1", ADULT_IN_FRANCE, NOW) is open_petition


# Every adult basis a credential can carry, against adults_only with and
# without accept_declared_adults: (claims, accepted where declared adults
# are refused, accepted where they are accepted).
ADULT_BASES = [
    (signer(adult=True, basis="verified"), True, True),
    # An anonymous credential of an issuer that serves adults only
    # (FranceConnect): the Assemblée's "adult signers, signing anonymously".
    (signer(adult=True, basis="provider"), True, True),
    (signer("email", adult=True, basis="declared"), False, True),
    # Not adult, whatever the basis says.
    (signer(adult=False, basis=""), False, False),
    (signer("email", adult=False, basis="declared"), False, False),
    # Adult without saying on what: not proof of adulthood.
    (signer(adult=True, basis=""), False, False),
]


@pytest.mark.parametrize(("claims", "without_declared", "with_declared"), ADULT_BASES)
def test_adults_only_accepts_proven_adults_and_declared_ones_only_where_the_petition_does(
    claims: SignerClaims, without_declared: bool, with_declared: bool
) -> None:
    for rules, accepted in ((ADULTS, without_declared), (ADULTS_OR_DECLARED, with_declared)):
        subject = petition(eligibility=rules)
        if accepted:
            assert check_can_sign(subject, "p-1", claims, NOW) is subject
            continue
        with pytest.raises(DomainError) as raised:
            check_can_sign(subject, "p-1", claims, NOW)
        assert (raised.value.kind, raised.value.reason) == (ErrorKind.FAILED_PRECONDITION, "NOT_ELIGIBLE")
        assert "adult" in raised.value.message


def test_a_declared_adult_is_told_that_a_declaration_is_not_enough() -> None:
    with pytest.raises(DomainError) as raised:
        check_can_sign(petition(eligibility=ADULTS), "p-1", signer("email", adult=True, basis="declared"), NOW)
    assert "self-declared" in raised.value.message


@pytest.mark.parametrize(
    ("rules", "method", "accepted"),
    [
        (OIDC_ONLY, "oidc", True),
        (OIDC_ONLY, "email", False),
        (EMAIL_ONLY, "email", True),
        (EMAIL_ONLY, "oidc", False),
        (ViewEligibility(methods=frozenset({"oidc", "email"})), "email", True),
        # No list: any method.
        (ViewEligibility(), "email", True),
        (ViewEligibility(), "oidc", True),
        # A credential that names no method is refused wherever methods are listed.
        (OIDC_ONLY, "", False),
    ],
)
def test_the_methods_rule_names_the_methods_allowed(rules: ViewEligibility, method: str, accepted: bool) -> None:
    subject = petition(eligibility=rules)
    claims = signer(method)
    if accepted:
        assert check_can_sign(subject, "p-1", claims, NOW) is subject
        return
    with pytest.raises(DomainError) as raised:
        check_can_sign(subject, "p-1", claims, NOW)
    assert (raised.value.kind, raised.value.reason) == (ErrorKind.FAILED_PRECONDITION, "NOT_ELIGIBLE")
    assert f"verified by {' or '.join(sorted(rules.methods))} only" in raised.value.message


def test_the_assemblee_rule_adults_signing_anonymously_through_france_connect_only() -> None:
    """The Assemblée's type: adults only, OIDC only, no declarations."""
    assemblee = petition(eligibility=ViewEligibility(adults_only=True, methods=frozenset({"oidc"})))
    assert check_can_sign(assemblee, "p-1", signer(adult=True, basis="provider"), NOW) is assemblee
    for refused in (signer("email", adult=True, basis="declared"), signer(adult=False)):
        with pytest.raises(DomainError) as raised:
            check_can_sign(assemblee, "p-1", refused, NOW)
        assert raised.value.reason == "NOT_ELIGIBLE"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"credential": ""}, "credential"),
        ({"credential": "x" * 5000}, "credential"),
        ({"petition_id": "UPPER"}, "petition_id"),
        ({"petition_id": "ab"}, "petition_id"),
        ({"idempotency_key": "short"}, "idempotency_key"),
        ({"idempotency_key": "has spaces in it"}, "idempotency_key"),
        ({"client_ip": "999.1.1.1"}, "client_ip"),
    ],
)
def test_validation_names_the_bad_field(request_fields: dict[str, str], field: str) -> None:
    fields = {"credential": "token", "petition_id": "p-1", "idempotency_key": "", "client_ip": ""}
    fields.update(request_fields)
    with pytest.raises(DomainError) as raised:
        validate(SignatureRequest(**fields))
    assert raised.value.kind is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in raised.value.violations] == [field]


def test_ledger_entries_survive_encoding() -> None:
    entry = LedgerEntry(EntryState.SIGNED, "sig", "idem", 1234.5, "signatures", 3, 42)
    assert LedgerEntry.decode(entry.encode().encode()) == entry
