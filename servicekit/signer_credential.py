"""The signer credential: the one contract between identity (which issues it)
and signing (which checks it offline).

It is a compact JWS signed with identity's Ed25519 key, the key id in its
header. It carries a keyed pseudonym and the coarse attributes the petition
rules need, never a name, email or provider subject.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

ISSUER = "petitions-identity"
AUDIENCE = "petitions-signing"
ALGORITHM = "EdDSA"
# Clock skew tolerated between identity and signing hosts.
LEEWAY_SECONDS = 5


@dataclass(frozen=True)
class SignerClaims:
    """What a signer credential asserts about its holder."""

    signer: str
    method: str
    assurance_level: str
    country: str
    territory: str
    adult: bool
    # What `adult` rests on: "verified" (a birthdate from an identified
    # provider), "provider" (an issuer configured as serving adults only),
    # "declared" (an email signer's own word), or "" (not known adult).
    adult_basis: str = ""


ADULT_BASES = frozenset({"", "verified", "provider", "declared"})


@dataclass(frozen=True)
class VerifiedCredential:
    claims: SignerClaims
    credential_id: str
    expires_at: float


class CredentialRejected(Exception):
    """The credential is malformed, forged, expired or signed by an unknown key."""


class UnknownKeyId(CredentialRejected):
    """Signed by a key id this verifier does not know (yet): refresh and retry."""


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of the public key, so a key's id follows from the key."""
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(canonical.encode())
    return jwt.utils.base64url_encode(digest.finalize()).decode()[:16]


def load_private_key(pem: bytes) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("signer credential keys must be Ed25519")
    return key


def public_jwks(public_keys: list[ed25519.Ed25519PublicKey]) -> str:
    """A JWK Set document with the given public keys."""
    keys = []
    for public_key in public_keys:
        jwk = dict(OKPAlgorithm.to_jwk(public_key, as_dict=True))
        jwk.update(kid=key_id(public_key), alg=ALGORITHM, use="sig")
        keys.append(jwk)
    return json.dumps({"keys": keys})


def issue(
    private_key: ed25519.Ed25519PrivateKey, claims: SignerClaims, ttl_seconds: int, now: float | None = None
) -> tuple[str, float]:
    """Signs a credential for claims; returns the token and its expiry."""
    issued = time.time() if now is None else now
    expires = issued + ttl_seconds
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": claims.signer,
        "mth": claims.method,
        "acr": claims.assurance_level,
        "cty": claims.country,
        "ter": claims.territory,
        "adl": claims.adult,
        "adb": claims.adult_basis,
        "iat": int(issued),
        "exp": int(expires),
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(payload, private_key, algorithm=ALGORITHM, headers={"kid": key_id(private_key.public_key())})
    return token, float(int(expires))


class CredentialVerifier:
    """Checks credentials offline against a set of identity's public keys."""

    def __init__(self, jwks_json: str = '{"keys": []}'):
        self._keys: Mapping[str, Any] = {}
        self.replace_keys(jwks_json)

    def replace_keys(self, jwks_json: str) -> None:
        keys: dict[str, Any] = {}
        for jwk in json.loads(jwks_json).get("keys", []):
            parsed = jwt.PyJWK(jwk, algorithm=ALGORITHM)
            keys[str(parsed.key_id)] = parsed
        self._keys = keys

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, token: str) -> VerifiedCredential:
        """A signer credential (audience petitions-signing)."""
        payload = self.decode(token, AUDIENCE)
        adult_basis = str(payload.get("adb", ""))
        if adult_basis not in ADULT_BASES:
            raise CredentialRejected(f"credential has an unknown adult basis {adult_basis!r}")
        return VerifiedCredential(
            claims=SignerClaims(
                signer=str(payload["sub"]),
                method=str(payload.get("mth", "")),
                assurance_level=str(payload.get("acr", "")),
                country=str(payload.get("cty", "")),
                territory=str(payload.get("ter", "")),
                adult=bool(payload.get("adl", False)),
                adult_basis=adult_basis,
            ),
            credential_id=str(payload["jti"]),
            expires_at=float(payload["exp"]),
        )

    def decode(self, token: str, audience: str) -> dict[str, Any]:
        """The verified claims of any credential identity issues, for one
        audience: a credential meant for another audience (an author's, a
        staff member's) is rejected here, whatever its signature."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise CredentialRejected(f"malformed credential: {error}") from None
        # Only EdDSA: refusing every other alg closes "none" and HS256-with-the-public-key.
        if header.get("alg") != ALGORITHM:
            raise CredentialRejected(f"credential algorithm {header.get('alg')!r} is not accepted")
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise UnknownKeyId(f"credential signed by unknown key {header.get('kid')!r}")
        try:
            payload = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise CredentialRejected("credential has expired") from None
        except jwt.PyJWTError as error:
            raise CredentialRejected(f"credential rejected: {error}") from None
        return dict(payload)
