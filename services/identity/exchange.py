"""Turning a verified identity into a credential: a signer's (any trusted
issuer), an author's or a staff member's (identified issuers only)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from servicekit import role_credentials, signer_credential
from servicekit.errors import DomainError, ErrorKind, invalid
from servicekit.request_guard import RequestGuard
from servicekit.signer_credential import SignerClaims
from services.identity.keyring import ReloadingKeyRing
from services.identity.metrics import (
    AUTHOR,
    CREDENTIALS_ISSUED,
    OIDC,
    ROLE_CREDENTIALS_ISSUED,
    STAFF,
    counted_verification,
)
from services.identity.names import NameForm, display_name, full_name
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
# What a signer credential's adult rests on (servicekit.signer_credential).
VERIFIED_BIRTHDATE = "verified"
PROVIDER_POLICY = "provider"
DECLARED = "declared"

_BIRTHDATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

_Issued = TypeVar("_Issued")


@dataclass(frozen=True)
class IssuedCredential:
    token: str
    expires_at: float
    claims: SignerClaims


@dataclass(frozen=True)
class IssuedAuthorCredential:
    token: str
    expires_at: float
    author: str
    display_name: str


@dataclass(frozen=True)
class IssuedStaffCredential:
    token: str
    expires_at: float
    staff: str
    name: str
    roles: frozenset[str]


class CredentialSigner:
    """Signs credentials with the key ring's current key."""

    def __init__(
        self,
        keyring: ReloadingKeyRing,
        ttl_seconds: int,
        *,
        author_ttl_seconds: int = 3600,
        staff_ttl_seconds: int = 900,
    ):
        self._keyring = keyring
        self._ttl = ttl_seconds
        self._author_ttl = author_ttl_seconds
        self._staff_ttl = staff_ttl_seconds

    def issue(self, claims: SignerClaims) -> IssuedCredential:
        token, expires_at = signer_credential.issue(self._keyring.current.signing_key, claims, self._ttl)
        CREDENTIALS_ISSUED.labels(claims.method).inc()
        return IssuedCredential(token=token, expires_at=expires_at, claims=claims)

    def issue_author(self, author: str, name: str) -> IssuedAuthorCredential:
        token, expires_at = role_credentials.issue_author(
            self._keyring.current.signing_key, author, name, self._author_ttl
        )
        ROLE_CREDENTIALS_ISSUED.labels(AUTHOR).inc()
        return IssuedAuthorCredential(token=token, expires_at=expires_at, author=author, display_name=name)

    def issue_staff(self, staff: str, name: str, roles: frozenset[str]) -> IssuedStaffCredential:
        token, expires_at = role_credentials.issue_staff(
            self._keyring.current.signing_key, staff, name, roles, self._staff_ttl
        )
        ROLE_CREDENTIALS_ISSUED.labels(STAFF).inc()
        return IssuedStaffCredential(token=token, expires_at=expires_at, staff=staff, name=name, roles=roles)


class IdTokenExchange:
    """Exchanges OpenID Connect ID tokens for signer, author and staff
    credentials. Every exchange verifies the token the same way and spends
    it once; a refusal that is about the person rather than the token (not
    an identified sign-in, not an adult, no name, not staff) is decided
    before the spend, so the same token still buys what it can (a signer
    credential)."""

    def __init__(
        self,
        verifier: IdTokenVerifier,
        spent: SpentIdTokens,
        signer: CredentialSigner,
        pseudonym_secret: bytes,
        guard: RequestGuard,
        staff_roles: Mapping[tuple[str, str], frozenset[str]] | None = None,
    ):
        self._verifier = verifier
        self._spent = spent
        self._signer = signer
        self._secret = pseudonym_secret
        self._guard = guard
        # (issuer, subject) -> roles, from the configuration.
        self._staff_roles = dict(staff_roles or {})

    async def exchange(self, id_token: str, nonce: str, client_ip: str) -> IssuedCredential:
        with counted_verification(OIDC):
            verified = await self._verified(id_token, nonce, client_ip)
            signer = oidc_pseudonym(self._secret, verified.issuer.issuer, verified.subject)
            # The claims are read once the token is spent, so a replay does
            # not count the provider's dropped claims twice.
            return await self._spend_and_issue(
                verified, id_token, signer, lambda: self._signer.issue(claims_of(verified, self._secret))
            )

    async def exchange_author(
        self, id_token: str, nonce: str, client_ip: str, form: NameForm
    ) -> IssuedAuthorCredential:
        with counted_verification(OIDC):
            verified = await self._verified(id_token, nonce, client_ip)
            _require_identified(verified, "deposit a petition")
            _require_adult(verified)
            name = display_name(verified.claims, form)
            author = oidc_pseudonym(self._secret, verified.issuer.issuer, verified.subject)
            return await self._spend_and_issue(
                verified, id_token, author, lambda: self._signer.issue_author(author, name)
            )

    async def exchange_staff(self, id_token: str, nonce: str, client_ip: str) -> IssuedStaffCredential:
        with counted_verification(OIDC):
            verified = await self._verified(id_token, nonce, client_ip)
            _require_identified(verified, "act as staff")
            roles = self._staff_roles.get((verified.issuer.issuer, verified.subject), frozenset())
            if not roles:
                raise DomainError(
                    ErrorKind.PERMISSION_DENIED,
                    "NOT_STAFF",
                    "no staff role is configured for this person (PETITIONS_STAFF_ROLES)",
                )
            name = full_name(verified.claims)
            staff = oidc_pseudonym(self._secret, verified.issuer.issuer, verified.subject)
            return await self._spend_and_issue(
                verified, id_token, staff, lambda: self._signer.issue_staff(staff, name, roles)
            )

    async def _verified(self, id_token: str, nonce: str, client_ip: str) -> VerifiedIdToken:
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
            return await self._verifier.verify(jws, nonce)
        except IdTokenRejected as error:
            raise DomainError(ErrorKind.UNAUTHENTICATED, "ID_TOKEN_REJECTED", str(error)) from None
        except ProviderUnavailable as error:
            raise DomainError(
                ErrorKind.UNAVAILABLE, "PROVIDER_UNAVAILABLE", str(error), retry_after_seconds=5
            ) from None

    async def _spend_and_issue(
        self, verified: VerifiedIdToken, id_token: str, person: str, issue: Callable[[], _Issued]
    ) -> _Issued:
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
            # One person's sign-ins share one limit, whatever they sign in for.
            await self._guard.take(signer=person)
            return issue()
        except BaseException:
            # Nothing was issued: the holder may retry with the same token.
            await self._spent.restore(mark)
            raise


def _require_identified(verified: VerifiedIdToken, purpose: str) -> None:
    if verified.issuer.mode != "identified":
        raise DomainError(
            ErrorKind.FAILED_PRECONDITION,
            "IDENTIFIED_SIGN_IN_REQUIRED",
            f"to {purpose}, sign in with the identified mode of a provider (names and birthdate);"
            f" {verified.issuer.issuer} is trusted in anonymous mode only",
        )


def _require_adult(verified: VerifiedIdToken) -> None:
    birthdate = verified.claims.get("birthdate")
    if not isinstance(birthdate, str) or not birthdate:
        why = "the identity provider gave no birthdate"
    elif birth_date(birthdate) is None:
        why = "the identity provider's birthdate is not a date (YYYY-MM-DD)"
    elif not is_adult(birthdate, date.today()):
        why = f"an author must be at least {ADULT_AGE} years old"
    else:
        return
    raise DomainError(ErrorKind.FAILED_PRECONDITION, "AUTHOR_NOT_ADULT", f"{why}: only an adult may deposit a petition")


def claims_of(verified: VerifiedIdToken, secret: bytes) -> SignerClaims:
    """The signer claims for a verified ID token. Only identified mode reads
    the birthdate, and only to derive adulthood; a signer's names are never
    read. An anonymous issuer that serves adults only proves adulthood by
    who it serves."""
    issuer = verified.issuer
    raw = verified.claims
    adult, basis = False, ""
    if issuer.mode == "identified":
        if is_adult(str(raw.get("birthdate", "")), date.today()):
            adult, basis = True, VERIFIED_BIRTHDATE
    elif issuer.serves_adults_only:
        adult, basis = True, PROVIDER_POLICY
    return SignerClaims(
        signer=oidc_pseudonym(secret, issuer.issuer, verified.subject),
        method="oidc",
        assurance_level=str(raw.get(issuer.assurance_claim, "")),
        # Checked as the email flow checks a declared place; what is no
        # code is dropped (and counted), never carried as sent.
        country=claimed_country(raw.get(issuer.country_claim)),
        territory=claimed_territory(raw.get(issuer.territory_claim)),
        adult=adult,
        adult_basis=basis,
    )


def birth_date(birthdate: str) -> date | None:
    """The date of an OpenID Connect birthdate claim written YYYY-MM-DD, or
    None. Matched whole: fromisoformat alone also takes "19900101" and week
    dates, which no provider means as a birthdate."""
    if not _BIRTHDATE.fullmatch(birthdate):
        return None
    try:
        return date.fromisoformat(birthdate)
    except ValueError:
        return None


def is_adult(birthdate: str, today: date) -> bool:
    """True when a YYYY-MM-DD birthdate is at least 18 years before today."""
    born = birth_date(birthdate)
    if born is None:
        return False
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return age >= ADULT_AGE
