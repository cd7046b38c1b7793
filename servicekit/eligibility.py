"""Who may sign or sponsor a petition: its eligibility (countries, adults
only and what proves adulthood, verification methods) against what a signer
credential asserts. One rule for signing (Sign) and the petitions service
(SponsorPetition); pure, so it is unit-tested on its own."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from petitions.v1 import identity_pb2, petition_pb2
from servicekit.errors import DomainError, ErrorKind
from servicekit.signer_credential import SignerClaims

# What adults_only accepts as proof of adulthood (the credential's
# adult_basis): a birthdate an identified provider gave, or an issuer that
# serves adults only (FranceConnect). An email signer's own declaration
# counts only where the petition accepts declared adults.
PROVEN_ADULT_BASES = frozenset({"verified", "provider"})
DECLARED_ADULT_BASIS = "declared"

# Eligibility.methods (proto enum) as signer credentials name the method.
METHOD_NAMES = {
    identity_pb2.VERIFICATION_METHOD_OIDC: "oidc",
    identity_pb2.VERIFICATION_METHOD_EMAIL: "email",
}


class Rules(Protocol):
    """The eligibility, in plain types (the petition view's ViewEligibility)."""

    @property
    def countries(self) -> Collection[str]: ...

    @property
    def adults_only(self) -> bool: ...

    # "oidc", "email"; empty = any method.
    @property
    def methods(self) -> Collection[str]: ...

    @property
    def accept_declared_adults(self) -> bool: ...


@dataclass(frozen=True)
class PlainRules:
    countries: frozenset[str]
    adults_only: bool
    methods: frozenset[str]
    accept_declared_adults: bool


def rules_of(message: petition_pb2.Eligibility) -> PlainRules:
    return PlainRules(
        countries=frozenset(message.countries),
        adults_only=message.adults_only,
        methods=frozenset(METHOD_NAMES[m] for m in message.methods if m in METHOD_NAMES),
        accept_declared_adults=message.accept_declared_adults,
    )


def not_eligible(message: str) -> DomainError:
    return DomainError(ErrorKind.FAILED_PRECONDITION, "NOT_ELIGIBLE", message)


def check_eligible(rules: Rules, claims: SignerClaims, act: str = "sign") -> None:
    """Raises FAILED_PRECONDITION NOT_ELIGIBLE, naming the rule the holder
    does not meet, unless the credential's holder may `act` ("sign",
    "support") under these rules."""
    if rules.countries and claims.country not in rules.countries:
        raise not_eligible(f"only residents of {', '.join(sorted(rules.countries))} may {act} this petition")
    if rules.methods and claims.method not in rules.methods:
        # One person proving twice (by email, then OIDC) holds two
        # pseudonyms; a petition that allows one method closes that hole.
        people = "signers" if act == "sign" else "people"
        raise not_eligible(
            f"this petition accepts {people} verified by {' or '.join(sorted(rules.methods))} only;"
            f" this credential was verified by {claims.method or 'an unknown method'}"
        )
    if rules.adults_only:
        accepted = PROVEN_ADULT_BASES | ({DECLARED_ADULT_BASIS} if rules.accept_declared_adults else set())
        if not claims.adult or claims.adult_basis not in accepted:
            if claims.adult and claims.adult_basis == DECLARED_ADULT_BASIS:
                raise not_eligible(
                    f"only adults may {act} this petition, and a self-declared adulthood is not accepted:"
                    " sign in with an identity provider that proves it"
                )
            raise not_eligible(f"only adults may {act} this petition, and this credential does not prove adulthood")
