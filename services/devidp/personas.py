"""Minting ID tokens for dev personas. Cheap enough for load tests: one ES256
signature per token, no network round trip when called in-process."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

# Defined in settings (dev-secrets reads it there); re-exported for the
# server and the tests.
from services.devidp.settings import KEY_FILE as KEY_FILE

ALGORITHM = "ES256"


@dataclass(frozen=True)
class Persona:
    """A made-up person. identified personas carry a name and birthdate, as a
    national provider's identified mode would; anonymous ones only a subject.
    A name left None is made from the persona ("alice": Alice Persona); an
    empty name or birthdate is left out of the token, as a provider that has
    none would."""

    name: str
    country: str = "FR"
    territory: str = "75"
    identified: bool = False
    birthdate: str = "1990-01-01"
    given_name: str | None = None
    family_name: str | None = None

    @property
    def subject(self) -> str:
        return f"dev-persona:{self.name}"

    def identity_claims(self) -> dict[str, str]:
        """The identified mode's claims (OIDC standard names), those it has."""
        claims = {
            "given_name": self.name.title() if self.given_name is None else self.given_name,
            "family_name": "Persona" if self.family_name is None else self.family_name,
            "birthdate": self.birthdate,
        }
        return {claim: value for claim, value in claims.items() if value}


class DevTokenMinter:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey, issuer: str):
        self._key = private_key
        self.issuer = issuer
        self.kid = "dev-" + ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)["x"][:12]

    @classmethod
    def from_pem(cls, pem: bytes, issuer: str) -> DevTokenMinter:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the dev provider key must be an EC P-256 key")
        return cls(key, issuer)

    def jwks(self) -> dict[str, object]:
        jwk = dict(ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True))
        jwk.update(kid=self.kid, alg=ALGORITHM, use="sig")
        return {"keys": [jwk]}

    def mint(self, persona: Persona, audience: str, *, nonce: str = "", lifetime_seconds: int = 300) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": persona.subject,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            # Identity spends each token once, by its jti: two tokens minted
            # for one persona in the same second are two tokens.
            "jti": secrets.token_urlsafe(16),
            "acr": "dev",
            "country": persona.country,
            "territory": persona.territory,
        }
        if nonce:
            claims["nonce"] = nonce
        if persona.identified:
            claims.update(persona.identity_claims())
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
