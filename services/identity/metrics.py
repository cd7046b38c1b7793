"""Identity's own metrics (the RPC metrics are servicekit's)."""

from __future__ import annotations

from prometheus_client import Counter

JWKS_FETCHES = Counter(
    "petitions_identity_jwks_fetches_total",
    "Fetches of a provider's discovery document and key set, by issuer and outcome.",
    ["issuer", "outcome"],
)
CREDENTIALS_ISSUED = Counter(
    "petitions_identity_credentials_issued_total", "Signer credentials issued, by method.", ["method"]
)
CODES_SENT = Counter("petitions_identity_email_codes_sent_total", "One-time codes sent by email.")
