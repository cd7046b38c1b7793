"""Pure rules of signing, without any store: who may sign what, when."""

from __future__ import annotations

import pytest

from servicekit.errors import DomainError, ErrorKind
from servicekit.signer_credential import SignerClaims
from services.catalogue.model import Eligibility, Petition, PetitionState
from services.signing.intake import SignatureRequest, check_can_sign, validate
from services.signing.ledger import EntryState, LedgerEntry

NOW = 1_800_000_000.0
ADULT_IN_FRANCE = SignerClaims("s1", "oidc", "eidas2", "FR", "75", adult=True)


def petition(**changes: object) -> Petition:
    fields: dict[str, object] = {
        "id": "p-1",
        "title": "t",
        "text": "",
        "author": "",
        "state": PetitionState.OPEN,
        "opens_at": None,
        "closes_at": None,
    }
    fields.update(changes)
    return Petition(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "claims", "reason"),
    [
        ({"state": PetitionState.DRAFT}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"state": PetitionState.CLOSED}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"closes_at": NOW - 1}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"opens_at": NOW + 60}, ADULT_IN_FRANCE, "PETITION_NOT_OPEN"),
        ({"eligibility": Eligibility(countries=frozenset({"BE"}))}, ADULT_IN_FRANCE, "NOT_ELIGIBLE"),
        (
            {"eligibility": Eligibility(adults_only=True)},
            SignerClaims("s2", "oidc", "", "FR", "75", adult=False),
            "NOT_ELIGIBLE",
        ),
    ],
)
def test_refusals_are_failed_preconditions(changes: dict[str, object], claims: SignerClaims, reason: str) -> None:
    with pytest.raises(DomainError) as raised:
        check_can_sign(petition(**changes), "p-1", claims, NOW)
    assert (raised.value.kind, raised.value.reason) == (ErrorKind.FAILED_PRECONDITION, reason)


def test_an_open_petition_inside_its_window_accepts_an_eligible_signer() -> None:
    open_petition = petition(
        opens_at=NOW - 60, closes_at=NOW + 60, eligibility=Eligibility(frozenset({"FR"}), adults_only=True)
    )
    assert check_can_sign(open_petition, "p-1", ADULT_IN_FRANCE, NOW) is open_petition


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
