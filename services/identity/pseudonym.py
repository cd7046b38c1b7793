"""Keyed pseudonyms: one stable, meaningless identifier per person.

HMAC with a secret that never leaves identity means the pseudonym cannot be
reversed or recomputed from a leaked subject list without the key.
"""

from __future__ import annotations

import hashlib
import hmac


def oidc_pseudonym(secret: bytes, issuer: str, subject: str) -> str:
    """The pseudonym of a provider subject; the issuer is part of it because
    subjects are only unique within one provider."""
    return _hmac(secret, "oidc", issuer, subject)


def email_pseudonym(secret: bytes, normalised_email: str) -> str:
    return _hmac(secret, "email", normalised_email)


def _hmac(secret: bytes, *parts: str) -> str:
    # NUL cannot appear in an issuer URL or subject, so the join is unambiguous.
    message = "\x00".join(parts).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
