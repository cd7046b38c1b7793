"""Turning a verified identity into a signer credential."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from servicekit import signer_credential
from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.request_guard import RequestGuard
from servicekit.signer_credential import SignerClaims
from services.identity.keyring import ReloadingKeyRing
from services.identity.metrics import CREDENTIALS_ISSUED, OIDC, counted_verification
from services.identity.oidc import (
    IdTokenRejected,
    IdTokenVerifier,
    MalformedIdToken,
    ProviderUnavailable,
    VerifiedIdToken,
    parse_compact_jws,
)
from services.identity.places import claimed_country, claimed_territory
from services.identity.pseudonym import oidc_pseudonym
from services.identity.spent_id_tokens import SpentIdTokens, SpentTokensUnavailable

MAX_TOKEN_LENGTH = 16_384
ADULT_AGE = 18


@dataclass(frozen=True)
class IssuedCredential:
    token: str
    expires_at: float
    claims: SignerClaims


class CredentialSigner:
    """Signs credentials with the key ring's current key."""

    def __init__(self, keyring: ReloadingKeyRing, ttl_seconds: int):
        self._keyring = keyring
        self._ttl = ttl_seconds

    def issue(self, claims: SignerClaims) -> IssuedCredential:
        token, expires_at = signer_credential.issue(self._keyring.current.signing_key, claims, self._ttl)
        CREDENTIALS_ISSUED.labels(claims.method).inc()
        return IssuedCredential(token=token, expires_at=expires_at, claims=claims)


class IdTokenExchange:
    """Exchanges OpenID Connect ID tokens for signer credentials."""

    def __init__(
        self,
        verifier: IdTokenVerifier,
        spent: SpentIdTokens,
        signer: CredentialSigner,
        pseudonym_secret: bytes,
        guard: RequestGuard,
    ):
        self._verifier = verifier
        self._spent = spent
        self._signer = signer
        self._secret = pseudonym_secret
        self._guard = guard

    async def exchange(self, id_token: str, nonce: str, client_ip: str) -> IssuedCredential:
        with counted_verification(OIDC):
            return await self._exchange(id_token, nonce, client_ip)

    async def _exchange(self, id_token: str, nonce: str, client_ip: str) -> IssuedCredential:
        if not id_token:
            raise invalid("id_token", "is required")
        if len(id_token) > MAX_TOKEN_LENGTH:
            raise invalid("id_token", f"is longer than {MAX_TOKEN_LENGTH} characters")
        # Text that is not even a signed JWT is the caller's bug, not a failed
        # proof: INVALID_ARGUMENT, before it costs any limit.
        try:
            jws = parse_compact_jws(id_token)
        except MalformedIdToken as error:
            raise invalid("id_token", str(error), reason="MALFORMED_ID_TOKEN") from None
        self._guard.check_blocked(ip=client_ip)
        await self._guard.take(ip=client_ip)
        try:
            verified = await self._verifier.verify(jws, nonce)
        except IdTokenRejected as error:
            raise DomainError(ErrorKind.UNAUTHENTICATED, "ID_TOKEN_REJECTED", str(error)) from None
        except ProviderUnavailable as error:
            raise DomainError(
                ErrorKind.UNAVAILABLE, "PROVIDER_UNAVAILABLE", str(error), retry_after_seconds=5
            ) from None
        # Spent once verified: a replay is refused before it costs the
        # person's limits, and a forged token cannot spend anyone's.
        try:
            mark = await self._spent.spend(verified, id_token)
        except SpentTokensUnavailable as error:
            raise DomainError(
                ErrorKind.UNAVAILABLE,
                "ID_TOKEN_LEDGER_UNAVAILABLE",
                f"cannot check that the ID token is unused: {error}",
                retry_after_seconds=2,
            ) from None
        if mark is None:
            raise DomainError(
                ErrorKind.UNAUTHENTICATED,
                "ID_TOKEN_REUSED",
                "this ID token was already exchanged; sign in again for a new one",
            )
        try:
            claims = claims_of(verified, self._secret)
            await self._guard.take(signer=claims.signer)
            return self._signer.issue(claims)
        except BaseException:
            # Nothing was issued: the holder may retry with the same token.
            await self._spent.restore(mark)
            raise


def claims_of(verified: VerifiedIdToken, secret: bytes) -> SignerClaims:
    """The signer claims for a verified ID token. Only identified mode reads
    the birthdate, and only to derive adulthood; names are never read."""
    issuer = verified.issuer
    raw = verified.claims
    adult = False
    if issuer.mode == "identified":
        adult = is_adult(str(raw.get("birthdate", "")), date.today())
    return SignerClaims(
        signer=oidc_pseudonym(secret, issuer.issuer, verified.subject),
        method="oidc",
        assurance_level=str(raw.get(issuer.assurance_claim, "")),
        # Checked as the email flow checks a declared place; what is no
        # code is dropped (and counted), never carried as sent.
        country=claimed_country(raw.get(issuer.country_claim)),
        territory=claimed_territory(raw.get(issuer.territory_claim)),
        adult=adult,
    )


def is_adult(birthdate: str, today: date) -> bool:
    """True when an ISO 8601 birthdate is at least 18 years before today."""
    try:
        born = date.fromisoformat(birthdate)
    except ValueError:
        return False
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return age >= ADULT_AGE
