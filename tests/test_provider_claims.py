"""The country and territory an identity provider asserts are checked as
the email flow checks what a person declares: a claim that is not a real
code is dropped from the credential (and counted), and the person can still
sign."""

from __future__ import annotations

import uuid

import jwt
import pytest

from petitions.v1 import signing_pb2
from tests.system import SystemClient

pytestmark = pytest.mark.stack


def dropped(system: SystemClient, claim: str) -> float:
    return system.metric_value("identity", f'petitions_identity_provider_claims_dropped_total{{claim="{claim}"}}')


def persona() -> str:
    return f"claims-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    "territory",
    ['=HYPERLINK("x")', "75\r\n<b>", "75\n", "75\x00", "20", "00", "2C", "2a", " 75", "x" * 200],
)
def test_a_bad_territory_claim_is_dropped_and_counted(system: SystemClient, territory: str) -> None:
    before = (dropped(system, "territory"), dropped(system, "country"))

    credential = system.credential(persona(), "FR", territory)

    assert (credential.claims.country, credential.claims.territory) == ("FR", "")
    token_claims = jwt.decode(credential.token, options={"verify_signature": False})
    assert (token_claims["cty"], token_claims["ter"]) == ("FR", "")
    assert (dropped(system, "territory"), dropped(system, "country")) == (before[0] + 1, before[1])


@pytest.mark.parametrize("country", ["FRA", "F", "F1", '=HYPERLINK("x")', "FR\n", "FR\r\n", "FR\x00", "ß", "12"])
def test_a_bad_country_claim_is_dropped_and_counted(system: SystemClient, country: str) -> None:
    before = (dropped(system, "territory"), dropped(system, "country"))

    credential = system.credential(persona(), country, "13")

    assert (credential.claims.country, credential.claims.territory) == ("", "13")
    assert (dropped(system, "territory"), dropped(system, "country")) == (before[0], before[1] + 1)


@pytest.mark.parametrize(
    ("country", "territory", "carried"),
    [("FR", "2A", ("FR", "2A")), ("fr", "2B", ("FR", "2B")), ("BE", "", ("BE", "")), ("FR", "988", ("FR", "988"))],
)
def test_good_claims_are_carried_with_the_country_in_capitals(
    system: SystemClient, country: str, territory: str, carried: tuple[str, str]
) -> None:
    before = (dropped(system, "territory"), dropped(system, "country"))

    credential = system.credential(persona(), country, territory)

    assert (credential.claims.country, credential.claims.territory) == carried
    assert (dropped(system, "territory"), dropped(system, "country")) == before


def test_a_person_whose_claims_were_dropped_still_signs_and_counts_nowhere(system: SystemClient) -> None:
    credential = system.credential(persona(), "=1+1", '=HYPERLINK("x")')
    petition = system.create_petition("Signed without a territory")

    assert system.sign(credential.token, petition.id).outcome == signing_pb2.SignResponse.OUTCOME_ACCEPTED
    tally = system.settled_tally(petition.id)
    assert (tally.total, dict(tally.by_territory), dict(tally.by_country)) == (1, {}, {})
