"""Who may support a petition: the petition's eligibility (countries,
adults only and what proves adulthood, verification methods) against what a
signer credential asserts.

Pure, so that it is unit-tested on its own. Sponsoring uses it; signing has
the same rule in services/signing/intake.py (check_eligible, over its view's
plain types) until the two share this module.
"""

from __future__ import annotations

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


def not_eligible(message: str) -> DomainError:
    return DomainError(ErrorKind.FAILED_PRECONDITION, "NOT_ELIGIBLE", message)


def check_eligible(rules: petition_pb2.Eligibility, claims: SignerClaims) -> None:
    """Raises FAILED_PRECONDITION NOT_ELIGIBLE, naming the rule the holder
    does not meet, unless the credential's holder is eligible."""
    if rules.countries and claims.country not in rules.countries:
        raise not_eligible(f"only residents of {', '.join(sorted(rules.countries))} may support this petition")
    methods = {METHOD_NAMES.get(m, "") for m in rules.methods}
    if methods and claims.method not in methods:
        # One person proving twice (by email, then OIDC) holds two
        # pseudonyms; a petition that allows one method closes that hole.
        raise not_eligible(
            f"this petition accepts people verified by {' or '.join(sorted(methods))} only;"
            f" this credential was verified by {claims.method or 'an unknown method'}"
        )
    if rules.adults_only:
        accepted = PROVEN_ADULT_BASES | ({DECLARED_ADULT_BASIS} if rules.accept_declared_adults else set())
        if not claims.adult or claims.adult_basis not in accepted:
            if claims.adult and claims.adult_basis == DECLARED_ADULT_BASIS:
                raise not_eligible(
                    "only adults may support this petition, and a self-declared adulthood is not accepted:"
                    " sign in with an identity provider that proves it"
                )
            raise not_eligible("only adults may support this petition, and this credential does not prove adulthood")
