"""The country and territory a credential carries, checked the same way
whoever said them: the person (email flow) or their identity provider (OIDC).

Both end up in every signature and in the public counts, so a value is
either a real code, whole, or nothing: never "75\\n", never a spreadsheet
formula. A territory must be one of the reference codes
(servicekit.territories), exactly as listed ("2A", not "2a").
"""

from __future__ import annotations

import re

from servicekit import territories
from services.identity.metrics import COUNTRY_CLAIM, PROVIDER_CLAIMS_DROPPED, TERRITORY_CLAIM

# ISO 3166-1 alpha-2 shape; always matched against the whole value.
COUNTRY = re.compile(r"[A-Z]{2}")


def is_country(code: str) -> bool:
    """True when code is two upper-case ASCII letters, nothing more."""
    return COUNTRY.fullmatch(code) is not None


def is_territory(code: str) -> bool:
    return territories.is_valid(code)


def claimed_country(value: object) -> str:
    """A provider's country claim as the credential carries it: the code
    (upper-cased, as providers differ in case), "" when the claim is absent,
    or "" and counted when it is no code. ASCII is required before
    upper-casing, which would turn "ß" into "SS"."""
    if value is None or value == "":
        return ""
    if isinstance(value, str) and value.isascii() and is_country(value.upper()):
        return value.upper()
    return _dropped(COUNTRY_CLAIM)


def claimed_territory(value: object) -> str:
    """A provider's territory claim as the credential carries it: the code,
    "" when the claim is absent, or "" and counted when it is no code."""
    if value is None or value == "":
        return ""
    if isinstance(value, str) and is_territory(value):
        return value
    return _dropped(TERRITORY_CLAIM)


def _dropped(claim: str) -> str:
    # A provider is trusted for who the person is, not for the shape of what
    # it sends: a bad value is left out (the person can still sign where no
    # territory is required) rather than refusing the sign-in.
    PROVIDER_CLAIMS_DROPPED.labels(claim).inc()
    return ""
