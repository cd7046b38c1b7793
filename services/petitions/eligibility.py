"""Who may support a petition: servicekit's one eligibility rule (shared
with signing's Sign) over the petition's Eligibility message."""

from __future__ import annotations

from petitions.v1 import petition_pb2
from servicekit import eligibility
from servicekit.signer_credential import SignerClaims


def check_eligible(rules: petition_pb2.Eligibility, claims: SignerClaims) -> None:
    """Raises FAILED_PRECONDITION NOT_ELIGIBLE, naming the rule the holder
    does not meet, unless the credential's holder may support the petition."""
    eligibility.check_eligible(eligibility.rules_of(rules), claims, act="support")
