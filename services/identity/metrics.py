"""Identity's own metrics (the RPC metrics are servicekit's), named once.
Labels are bounded: issuers come from configuration, methods and outcomes
from the fixed lists below; never an address or a person."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import Counter

from servicekit.errors import DomainError, ErrorKind

JWKS_FETCHES = Counter(
    "petitions_identity_jwks_fetches_total",
    "Fetches of a provider's discovery document and key set, by issuer and outcome.",
    ["issuer", "outcome"],
)
CREDENTIALS_ISSUED = Counter(
    "petitions_identity_credentials_issued_total", "Signer credentials issued, by method.", ["method"]
)
ROLE_CREDENTIALS_ISSUED = Counter(
    "petitions_identity_role_credentials_issued_total",
    "Author and staff credentials issued (ExchangeAuthorIdToken, ExchangeStaffIdToken), by kind; their"
    " verification steps count in petitions_identity_verifications_total with method oidc.",
    ["kind"],
)
CODES_SENT = Counter("petitions_identity_email_codes_sent_total", "One-time codes sent by email.")
VERIFICATIONS = Counter(
    "petitions_identity_verifications_total",
    "Verification steps by method (oidc: ExchangeIdToken; email: BeginEmailVerification and"
    " CompleteEmailVerification) and outcome: issued, code_sent, rejected (the proof failed), invalid,"
    " limited (rate limit, or an address locked after wrong codes), blocked (block list), unavailable (a"
    " dependency), failed (an unexpected error).",
    ["method", "outcome"],
)

PROVIDER_CLAIMS_DROPPED = Counter(
    "petitions_identity_provider_claims_dropped_total",
    "Country or territory claims of a provider's ID token left out of the credential because they are not a valid"
    " code (a country not of two letters, a territory not in the reference list), by claim.",
    ["claim"],
)

OIDC = "oidc"
EMAIL = "email"
ISSUED = "issued"
CODE_SENT = "code_sent"
REJECTED = "rejected"
INVALID = "invalid"
LIMITED = "limited"
BLOCKED = "blocked"
UNAVAILABLE = "unavailable"
FAILED = "failed"
_ANY_STEP = (ISSUED, REJECTED, INVALID, LIMITED, BLOCKED, UNAVAILABLE, FAILED)
AUTHOR = "author"
STAFF = "staff"
COUNTRY_CLAIM = "country"
TERRITORY_CLAIM = "territory"
# The reason of a refusal while an address is locked after too many wrong
# codes: a limit, as RATE_LIMITED is.
ADDRESS_LOCKED = "ADDRESS_LOCKED"


def verification_outcome(error: DomainError) -> str:
    """The outcome label of a verification step refused with error."""
    if error.reason == "BLOCKED":
        return BLOCKED
    if error.reason in ("RATE_LIMITED", ADDRESS_LOCKED):
        return LIMITED
    if error.kind is ErrorKind.INVALID_ARGUMENT:
        return INVALID
    if error.kind is ErrorKind.UNAVAILABLE:
        return UNAVAILABLE
    return REJECTED


@contextlib.contextmanager
def counted_verification(method: str, success: str = ISSUED) -> Iterator[None]:
    """Counts one verification step: `success` when the block completes,
    else the outcome of what it raised (which is raised on)."""
    try:
        yield
    except DomainError as error:
        VERIFICATIONS.labels(method, verification_outcome(error)).inc()
        raise
    except Exception:
        VERIFICATIONS.labels(method, FAILED).inc()
        raise
    VERIFICATIONS.labels(method, success).inc()


# Every series exists from the start, at zero, so that rate() and ratios over
# them are defined before the first occurrence.
for _outcome in _ANY_STEP:
    VERIFICATIONS.labels(OIDC, _outcome)
    VERIFICATIONS.labels(EMAIL, _outcome)
VERIFICATIONS.labels(EMAIL, CODE_SENT)
for _kind in (AUTHOR, STAFF):
    ROLE_CREDENTIALS_ISSUED.labels(_kind)
for _claim in (COUNTRY_CLAIM, TERRITORY_CLAIM):
    PROVIDER_CLAIMS_DROPPED.labels(_claim)
