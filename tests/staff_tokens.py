"""Staff credentials for tests, minted with identity's own key from the
session's secrets (as the load tests mint signer credentials), so that any
role, or an expired one, can be had without a provider persona for it.
Identity publishes that key, so every service verifies them as it verifies
the ones Identity.ExchangeStaffIdToken issues."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ed25519

from servicekit import role_credentials
from servicekit.signer_credential import load_private_key
from tests.harness import Namespace


def identity_key(namespace: Namespace) -> ed25519.Ed25519PrivateKey:
    keys = sorted((namespace.secrets_dir / "identity-keys").glob("*.pem"))
    assert keys, "the session has no identity key"
    return load_private_key(keys[0].read_bytes())


def staff_token(namespace: Namespace, *roles: str, ttl: int = 300, now: float | None = None) -> str:
    token, _ = role_credentials.issue_staff(
        identity_key(namespace), "staff-" + uuid.uuid4().hex, "Test Staff", frozenset(roles), ttl, now
    )
    return token


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
