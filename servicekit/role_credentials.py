"""Author and staff credentials: what identity issues to an identified adult
who deposits petitions, and to a member of staff, and what the petitions
service (and signing, for InvalidateSignatures) checks offline.

Both are compact JWS signed with the same Ed25519 keys as signer credentials
(same issuer, same key set, same rotation), told apart by their audience: a
verifier asks for one audience, so a signer credential is never an author's,
an author's never a staff member's, and Sign (audience petitions-signing)
accepts neither.

An author credential carries the author's pseudonym and the display name the
author agreed to publish (petition content, public by consent). A staff
credential carries the staff member's pseudonym, name and roles: staff act in
their own name, and the audit trail records who decided.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519

from servicekit.signer_credential import (
    ALGORITHM,
    ISSUER,
    CredentialRejected,
    CredentialVerifier,
    key_id,
)

AUTHOR_AUDIENCE = "petitions-authors"
STAFF_AUDIENCE = "petitions-staff"

# The roles, as written in the credential, the configuration and the audit
# trail. StaffRole in identity.proto names the same three.
MODERATOR = "moderator"
CLERK = "clerk"
ADMINISTRATOR = "administrator"
ROLES = frozenset({MODERATOR, CLERK, ADMINISTRATOR})


@dataclass(frozen=True)
class AuthorClaims:
    author: str
    display_name: str
    # Always True in an issued credential (identity refuses minors); kept
    # as a claim so the check is the verifier's too, not only the issuer's.
    adult: bool
    credential_id: str
    expires_at: float


@dataclass(frozen=True)
class StaffClaims:
    staff: str
    name: str
    roles: frozenset[str]
    credential_id: str
    expires_at: float


def _sign(
    private_key: ed25519.Ed25519PrivateKey, payload: dict[str, object], ttl_seconds: int, now: float | None
) -> tuple[str, float]:
    issued = time.time() if now is None else now
    expires = float(int(issued + ttl_seconds))
    payload = {**payload, "iss": ISSUER, "iat": int(issued), "exp": int(expires), "jti": uuid.uuid4().hex}
    token = jwt.encode(payload, private_key, algorithm=ALGORITHM, headers={"kid": key_id(private_key.public_key())})
    return token, expires


def issue_author(
    private_key: ed25519.Ed25519PrivateKey,
    author: str,
    display_name: str,
    ttl_seconds: int,
    now: float | None = None,
) -> tuple[str, float]:
    """Signs an author credential; returns the token and its expiry."""
    payload: dict[str, object] = {"aud": AUTHOR_AUDIENCE, "sub": author, "nam": display_name, "adl": True}
    return _sign(private_key, payload, ttl_seconds, now)


def issue_staff(
    private_key: ed25519.Ed25519PrivateKey,
    staff: str,
    name: str,
    roles: frozenset[str],
    ttl_seconds: int,
    now: float | None = None,
) -> tuple[str, float]:
    """Signs a staff credential; returns the token and its expiry."""
    unknown = roles - ROLES
    if unknown or not roles:
        raise ValueError(f"a staff credential needs roles among {sorted(ROLES)}, not {sorted(roles)}")
    payload: dict[str, object] = {"aud": STAFF_AUDIENCE, "sub": staff, "nam": name, "rol": sorted(roles)}
    return _sign(private_key, payload, ttl_seconds, now)


def verify_author(verifier: CredentialVerifier, token: str) -> AuthorClaims:
    """Raises CredentialRejected (or UnknownKeyId) unless token is a valid
    author credential."""
    payload = verifier.decode(token, AUTHOR_AUDIENCE)
    name = payload.get("nam")
    if not isinstance(name, str) or not name:
        raise CredentialRejected("author credential has no display name")
    if payload.get("adl") is not True:
        raise CredentialRejected("author credential does not assert adulthood")
    return AuthorClaims(
        author=str(payload["sub"]),
        display_name=name,
        adult=True,
        credential_id=str(payload["jti"]),
        expires_at=float(payload["exp"]),
    )


def verify_staff(verifier: CredentialVerifier, token: str) -> StaffClaims:
    """Raises CredentialRejected (or UnknownKeyId) unless token is a valid
    staff credential with known roles."""
    payload = verifier.decode(token, STAFF_AUDIENCE)
    roles = payload.get("rol")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) and r in ROLES for r in roles):
        raise CredentialRejected(f"staff credential has no valid roles: {roles!r}")
    return StaffClaims(
        staff=str(payload["sub"]),
        name=str(payload.get("nam", "")),
        roles=frozenset(roles),
        credential_id=str(payload["jti"]),
        expires_at=float(payload["exp"]),
    )
